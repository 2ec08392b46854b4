"""Live state stores: one protocol (`base`), three implementations chosen by URL.

``memory`` (`MemoryStore`, `memory`), ``sqlite:///path.db`` (`SQLiteStore`, `sqlite`) and
``redis://host:port/db`` (`RedisStore`, `redis`); `open_store` picks one. Stores move bytes
and rows; they compute no features (SQLite's one exception is in `sqlite`).
"""

from __future__ import annotations

from fraudseq.serving.stores.base import (
    AccountStates,
    BatchSnapshot,
    BatchUpdate,
    BucketCounts,
    BucketTable,
    History,
    LabelChange,
    RecordRows,
    Snapshot,
    StateStore,
    StateStoreError,
    Update,
    open_store,
)
from fraudseq.serving.stores.memory import MemoryStore

__all__ = [
    "AccountStates",
    "BatchSnapshot",
    "BatchUpdate",
    "BucketCounts",
    "BucketTable",
    "History",
    "LabelChange",
    "MemoryStore",
    "RecordRows",
    "RedisStore",
    "SQLiteStore",
    "Snapshot",
    "StateStore",
    "StateStoreError",
    "Update",
    "open_store",
]


def __getattr__(name: str):
    # The SQLite and Redis stores import lazily (redis-py is optional).
    if name == "SQLiteStore":
        from fraudseq.serving.stores.sqlite import SQLiteStore

        return SQLiteStore
    if name == "RedisStore":
        from fraudseq.serving.stores.redis import RedisStore

        return RedisStore
    raise AttributeError(f"module 'fraudseq.serving.stores' has no attribute {name!r}")
