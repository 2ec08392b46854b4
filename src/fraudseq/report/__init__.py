"""Self-contained HTML reports of a fitted FraudModel on a labelled period."""

from fraudseq.report.html import build_model_report, write_model_report

__all__ = ["build_model_report", "write_model_report"]
