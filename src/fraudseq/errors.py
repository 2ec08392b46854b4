"""The one exception type users see: it names the file, the column, the rows and the fix."""

from __future__ import annotations


class FraudseqError(Exception):
    """A problem the user can fix; the CLI prints it without a traceback and exits non-zero."""


class DataValidationError(FraudseqError, ValueError):
    """Input data does not match the schema."""


class SchemaError(FraudseqError, ValueError):
    """The schema file itself is wrong."""


class ModelDirectoryError(FraudseqError):
    """A model directory is missing, incomplete or fails its integrity check."""


class ConfigError(FraudseqError, ValueError):
    """A model family or hyperparameter is invalid; raised before any data is read."""
