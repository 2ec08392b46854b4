"""Self-contained HTML reports."""

from fraudseq.report.html import write_report

__all__ = ["write_report"]
