"""fraudseq: payment fraud detection from sequences of transactions."""

__version__ = "0.1.0"

from fraudseq.errors import DataValidationError, FraudseqError, ModelDirectoryError, SchemaError
from fraudseq.fraud_model import FraudModel
from fraudseq.schema import Schema, load_transactions
from fraudseq.simulate import simulate

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
