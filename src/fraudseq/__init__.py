"""fraudseq: payment fraud detection from sequences of transactions.

`FraudModel`, `Schema`, `load_transactions` and `simulate` are imported on first use, so that
`import fraudseq` (which every submodule, the command line included, goes through) loads
neither torch nor pandas.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING

__version__ = "0.1.0"

from fraudseq.errors import DataValidationError, FraudseqError, ModelDirectoryError, SchemaError

if TYPE_CHECKING:
    from fraudseq.fraud_model import FraudModel
    from fraudseq.schema import Schema, load_transactions
    from fraudseq.simulate import simulate

_LAZY = {
    "FraudModel": "fraudseq.fraud_model",
    "Schema": "fraudseq.schema",
    "load_transactions": "fraudseq.schema",
    "simulate": "fraudseq.simulate",
}

__all__ = [
    "DataValidationError",
    "FraudModel",
    "FraudseqError",
    "ModelDirectoryError",
    "Schema",
    "SchemaError",
    "__version__",
    "load_transactions",
    "simulate",
]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'fraudseq' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """`fraudseq.simulate` is the function, as it was when it was imported eagerly: importing
    the submodule of the same name would otherwise replace the attribute with the module."""

    def __setattr__(self, name: str, value) -> None:
        if name in _LAZY and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
