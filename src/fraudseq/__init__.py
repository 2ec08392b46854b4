"""fraudseq: payment fraud detection from sequences of transactions."""

__version__ = "0.1.0"
