"""The `fraudseq` Typer application, shared argument types and checks, and the entry point.

The command line imports only typer, rich and fraudseq's light modules; numpy, pandas, torch
and the rest load inside the commands and option checks that need them, so that `--help`
answers at once. tests/test_cli_polish.py checks that importing the CLI loads none of them.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import unicodedata
from collections.abc import Mapping, Sequence
from enum import StrEnum
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


def check_outputs(
    outputs: Mapping[str, Path | None],
    *,
    inputs: Mapping[str, Path | None] | None = None,
    model_dir: Path | None = None,
    directory: bool = False,
) -> None:
    """The one check every command runs on its outputs before any work: an output option
    (`outputs` maps it, e.g. "--json", to its path) must not name an input (`inputs` maps
    what it is, e.g. "the transactions file", to its path), the same file under another
    name (a symbolic or hard link), or anything inside the model directory `model_dir` or
    inside any other fraudseq model directory (a file added there breaks the model: its
    manifest lists every file). With `directory`, the outputs are directories that will be
    replaced as a whole (train --out), so they must not hold an input either."""
    from fraudseq.artifacts import model_manifest

    for option, out in outputs.items():
        if out is None:
            continue
        target = out.resolve()
        for role, path in (inputs or {}).items():
            if path is None:
                continue
            if _same_file(out, path):
                other = "" if target == path.resolve() else f" ({path} under another name)"
                raise FraudseqError(
                    f"{option} {out} is {role} itself{other}; writing it would replace "
                    "the input: choose another name"
                )
            if directory and path.resolve().is_relative_to(target):
                raise FraudseqError(
                    f"{option} {out} holds {role} {path}; the directory is replaced as a "
                    f"whole, which would delete it: choose another {option}"
                )
        models = [model_dir.resolve()] if model_dir is not None else []
        models += [p for p in target.parents if model_manifest(p) is not None]
        for model in models:
            if target.is_relative_to(model) and (target != model or not directory):
                raise FraudseqError(
                    f"{option} {out} is inside the model directory {model}; a file added "
                    "there changes the model (its manifest lists every file): write it "
                    "elsewhere"
                )
        if model_dir is not None and out.exists() and model_dir.is_dir():
            for file in model_dir.iterdir():
                if _same_file(out, file):
                    raise FraudseqError(
                        f"{option} {out} is the model directory's {file.name} under another "
                        "name (a link); writing it would change the model: choose another name"
                    )


def _same_file(a: Path, b: Path) -> bool:
    """Whether `a` and `b` name one file: the same path once links are resolved, or the same
    device and inode (a hard link)."""
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return False


#: Bidirectional marks, embeddings, overrides and isolates: they reorder what a terminal shows.
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_SHORT = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def printable(text: object, *, newlines: bool = False) -> str:
    """`text` with control characters (ESC, BEL, carriage return, DEL, C1 codes), line
    separators and bidirectional controls written as escapes (\\x1b, \\r, \\u202e), so that
    data printed to a terminal can neither move the cursor, recolour or clear the screen,
    nor reorder what is shown. `newlines` keeps line breaks (multi-line messages)."""
    text = str(text)
    if text.isprintable():  # every character escaped below is not printable
        return text
    out = []
    for ch in text:
        if ch == "\n" and newlines:
            out.append(ch)
        elif unicodedata.category(ch) in ("Cc", "Zl", "Zp") or ch in _BIDI:
            code = ord(ch)
            out.append(_SHORT.get(ch) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"))
        else:
            out.append(ch)
    return "".join(out)


def model_source(param: typer.CallbackParam, value: Path) -> Path:
    """A model to read: its directory, or an MLflow model URI (models:/NAME/VERSION,
    models:/NAME@ALIAS, runs:/RUN_ID/PATH) downloaded to a temporary directory, removed when
    the command exits (fraudseq.mlflow.resolve_model_uri). Either way the directory is then
    loaded, and verified, as usual. The one resolver of every command that reads a model."""
    from fraudseq.choices import MODEL_URI_SCHEMES

    text = str(value)
    if not text.startswith(MODEL_URI_SCHEMES):
        return value
    try:
        from fraudseq.mlflow import resolve_model_uri
    except ImportError as exc:
        raise FraudseqError(
            f"{text}: an MLflow model URI needs MLflow ({exc}); pip install 'fraudseq[mlflow]'"
        ) from None
    path = resolve_model_uri(text)
    _RESOLVED[path] = text
    return path


#: Directories downloaded by `model_source`, and the URI each came from.
_RESOLVED: dict[Path, str] = {}


def model_label(model_dir: Path) -> str:
    """How messages and reports name a model: its MLflow URI when it was given as one, else
    its directory."""
    return _RESOLVED.get(model_dir, str(model_dir))


def model_dir_to_rewrite(param: typer.CallbackParam, value: Path) -> Path:
    """A model directory that the command rewrites: an MLflow URI cannot be."""
    from fraudseq.choices import MODEL_URI_SCHEMES

    if str(value).startswith(MODEL_URI_SCHEMES):
        raise FraudseqError(
            f"{value}: this command rewrites a model directory, and a model in MLflow cannot "
            "be changed in place; download it (mlflow artifacts download), run the command on "
            "the directory, then log it as a new version (fraudseq.mlflow.log_model)"
        )
    return value


DataArg = Annotated[Path, typer.Argument(help="Transactions file: CSV, CSV.gz or Parquet.")]
ModelDirArg = Annotated[
    Path,
    typer.Argument(
        callback=model_source,
        help="Model directory written by `fraudseq train`, or an MLflow model URI: "
        "models:/NAME/VERSION, models:/NAME@ALIAS or runs:/RUN_ID/PATH, from the tracking "
        "server MLFLOW_TRACKING_URI names (needs the mlflow extra).",
    ),
]
RewrittenModelDirArg = Annotated[
    Path,
    typer.Argument(
        callback=model_dir_to_rewrite, help="Model directory written by `fraudseq train`."
    ),
]
FromOpt = Annotated[
    str | None,
    typer.Option(
        "--from", callback=time_option, help="Start: YYYY-MM-DD or ISO 8601 time (inclusive)."
    ),
]
WorkDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--work-dir",
        help="Stream the data through shards by entity written under this directory: memory "
        "bounded by a shard rather than the file (same results). A finished run's shards "
        "are reused.",
    ),
]
ShardsOpt = Annotated[
    int | None,
    typer.Option(min=1, help="Shards with --work-dir (default: about 1M transactions each)."),
]


class Engine(StrEnum):
    local = "local"
    ray = "ray"


EngineOpt = Annotated[
    Engine,
    typer.Option(help="ray: process the shards as Ray tasks (see --ray-address); local: here."),
]
RayAddressOpt = Annotated[
    str | None,
    typer.Option(
        help="With --engine ray: the cluster to join (HEAD:6379 from a cluster node, "
        "ray://HEAD:10001 through Ray Client, or auto); default a local Ray instance "
        "started and stopped with the command. --work-dir must then be a path every node "
        "sees."
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


def _print_version(value: bool) -> None:
    """`fraudseq --version`: the installed distribution's version, then exit."""
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            installed = version("fraudseq")
        except PackageNotFoundError:  # run from a source tree that was never installed
            from fraudseq import __version__ as installed
        print(f"fraudseq {installed}")
        raise typer.Exit()


@app.callback()
def _setup(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print fraudseq's version and exit.",
        ),
    ] = False,
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
    """Standard output without Rich markup or emoji codes, so brackets and :name: in user
    data print verbatim (control characters are for :func:`printable`); piped or logged
    output gets wide lines instead of 80 columns."""
    console = Console(markup=False, emoji=False)
    return console if console.is_terminal else Console(markup=False, emoji=False, width=200)


def main() -> None:
    """Entry point: user errors print one clear message and exit 1, without a traceback."""
    try:
        app()
    except FraudseqError as exc:
        # Text, not markup: messages quote user data, whose brackets Rich would parse, and
        # whose control characters must not reach the terminal
        message = printable(exc, newlines=True)
        console.print(Text.assemble(("error:", "bold red"), f" {message}"), soft_wrap=True)
        sys.exit(1)
