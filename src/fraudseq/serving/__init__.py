"""Live scoring: `Detector` (model + per-account state) and its state stores.

>>> from fraudseq.serving import Detector                                  # doctest: +SKIP
>>> detector = Detector.load("model", state="sqlite:///state.db")         # doctest: +SKIP
>>> detector.score(transaction)                                            # doctest: +SKIP
"""

from __future__ import annotations

from fraudseq.serving.detector import ConflictError, Detector, UnknownTransactionError
from fraudseq.serving.live_features import AccountState, LiveEncoder
from fraudseq.serving.stores import MemoryStore, StateStore, StateStoreError, open_store
from fraudseq.transaction import parse_transaction

__all__ = [
    "AccountState",
    "ConflictError",
    "Detector",
    "LiveEncoder",
    "MemoryStore",
    "StateStore",
    "StateStoreError",
    "UnknownTransactionError",
    "open_store",
    "parse_transaction",
]


def __getattr__(name: str):
    # The SQLite and Redis stores import lazily (redis-py is optional).
    if name in ("SQLiteStore", "RedisStore"):
        from fraudseq.serving import stores

        return getattr(stores, name)
    raise AttributeError(f"module 'fraudseq.serving' has no attribute {name!r}")
