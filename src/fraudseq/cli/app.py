"""The `fraudseq` Typer application, shared argument types and checks, and the entry point.

The command line imports only typer, rich and fraudseq's light modules; numpy, pandas, torch
and the rest load inside the commands and option checks that need them, so that `--help`
answers at once. tests/test_cli_polish.py checks that importing the CLI loads none of them.
"""

from __future__ import annotations

import logging
import sys
import tempfile
from collections.abc import Sequence
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


# Option callbacks: they run while the command line is parsed, so a bad value is one
# `error:` line naming the option before any data is loaded or any model trained.


def time_option(param: typer.CallbackParam, value: str | None) -> str | None:
    """A date or ISO 8601 time (see `splits.ISO_FORMATS`)."""
    from fraudseq.splits import parse_time

    parse_time(value, param.opts[0])
    return value


def strategy_option(param: typer.CallbackParam, value: str | None) -> str | None:
    """A threshold strategy."""
    from fraudseq.thresholds import parse_strategy

    if value is not None:
        parse_strategy(value, param.opts[0])
    return value


def one_of(choices: Sequence[str], *, many: bool = False):
    """A value in `choices` or, with `many`, a comma-separated list of them."""

    def check(param: typer.CallbackParam, value: str) -> str:
        items = [i.strip() for i in value.split(",") if i.strip()] if many else [value]
        unknown = [item for item in items if item not in choices]
        if unknown or not items:
            problem = f"unknown {unknown[0]!r}; " if many and unknown else ""
            raise FraudseqError(
                f"{param.opts[0]} {value!r}: {problem}choose "
                f"{'from' if many else 'one of'} {', '.join(choices)}"
            )
        return value

    return check


def output_file(param: typer.CallbackParam, value: Path | None) -> Path | None:
    """A file to write: not a directory, in a directory we can write in."""
    if value is not None:
        if not value.name or value.is_dir():
            raise FraudseqError(f"{param.opts[0]} {value} is a directory; give a file name")
        check_output_parent(value, param.opts[0])
    return value


def table_file(param: typer.CallbackParam, value: Path) -> Path:
    """A table file to write: CSV, CSV.gz or Parquet by its name."""
    from fraudseq.io import table_format

    output_file(param, value)
    table_format(value)
    return value


def check_output_parent(path: Path, option: str) -> None:
    """Raise unless `path` can be made in its directory: the nearest existing one must be a
    directory this process can create files in (missing ones are created)."""
    existing = next(p for p in path.absolute().parents if p.exists())
    if not existing.is_dir():
        raise FraudseqError(f"{option} {path}: {existing} is a file, not a directory")
    try:  # a real file, since permissions alone miss read-only and virtual file systems
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise FraudseqError(
            f"{option} {path}: cannot write in {existing}: {exc.strerror}"
        ) from None


DataArg = Annotated[Path, typer.Argument(help="Transactions file: CSV, CSV.gz or Parquet.")]
ModelDirArg = Annotated[Path, typer.Argument(help="Model directory written by `fraudseq train`.")]
FromOpt = Annotated[
    str | None,
    typer.Option(
        "--from", callback=time_option, help="Start: YYYY-MM-DD or ISO 8601 time (inclusive)."
    ),
]
UntilOpt = Annotated[
    str | None,
    typer.Option(
        "--until", callback=time_option, help="End: YYYY-MM-DD or ISO 8601 time (exclusive)."
    ),
]


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
def _setup(
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            "-v",
            help="Also log debug messages; give it before the command: fraudseq -v train ...",
        ),
    ] = False,
) -> None:
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
