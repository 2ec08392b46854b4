"""The `fraudseq` command line. Each module registers its commands on the one Typer app."""

from fraudseq.cli import checking, modeling, reporting, serving  # noqa: F401  (registers the commands)
from fraudseq.cli.app import app, main

__all__ = ["app", "main"]
