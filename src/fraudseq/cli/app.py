"""The `fraudseq` Typer application, shared argument types and the entry point."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.text import Text

from fraudseq.errors import FraudseqError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Payment fraud detection from sequences of transactions.",
)
console = Console(stderr=True)
log = logging.getLogger("fraudseq")

DataArg = Annotated[Path, typer.Argument(help="Transactions file: CSV, CSV.gz or Parquet.")]
ModelDirArg = Annotated[Path, typer.Argument(help="Model directory written by `fraudseq train`.")]
FromOpt = Annotated[str | None, typer.Option("--from", help="Start date/ISO time (inclusive).")]
UntilOpt = Annotated[str | None, typer.Option("--until", help="End date/ISO time (exclusive).")]


class _CurrentStderr(logging.StreamHandler):
    """Writes to `sys.stderr` as it is at each record, not as it was at setup, so that a
    replaced stderr (pytest's capture, an application embedding the CLI) is never written to
    after it is closed."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass  # always the current sys.stderr


@app.callback()
def _setup(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False, show_time=False)]
        if console.is_terminal
        else [_CurrentStderr()],
        force=True,
    )


def output_console() -> Console:
    """Standard output without Rich markup, so brackets in user data print verbatim; piped
    or logged output gets wide lines instead of 80 columns."""
    console = Console(markup=False)
    return console if console.is_terminal else Console(markup=False, width=200)


def main() -> None:
    """Entry point: user errors print one clear message and exit 1, without a traceback."""
    try:
        app()
    except FraudseqError as exc:
        # Text, not markup: messages quote user data, whose brackets Rich would parse
        console.print(Text.assemble(("error:", "bold red"), f" {exc}"), soft_wrap=True)
        sys.exit(1)
