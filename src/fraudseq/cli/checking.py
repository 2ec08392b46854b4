"""The `check` command: profile a transactions file before training on it, or draft its
schema from its columns (--suggest-schema)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from fraudseq.choices import LABEL_DELAY_DAYS, VALID_DAYS
from fraudseq.cli.app import DataArg, app, check_outputs, output_console, output_file
from fraudseq.errors import FraudseqError

if TYPE_CHECKING:
    from rich.table import Table

    from fraudseq.data_profile import DataProfile

log = logging.getLogger("fraudseq")

SAMPLE_ROWS = 10_000


@app.command()
def check(
    data: DataArg,
    schema: Annotated[
        Path | None,
        typer.Option(help="Schema TOML describing the columns; default: the simulator's."),
    ] = None,
    suggest_schema: Annotated[
        bool,
        typer.Option(
            "--suggest-schema",
            help="Print a commented schema guessed from the header and the first rows "
            "(no --schema needed); save it with > schema.toml and check every line.",
        ),
    ] = False,
    json_out: Annotated[
        Path | None,
        typer.Option("--json", callback=output_file, help="Also write the profile as JSON."),
    ] = None,
    valid_days: Annotated[
        float, typer.Option(min=0, help="The --valid-days you will train with.")
    ] = VALID_DAYS,
    label_delay_days: Annotated[
        float, typer.Option(min=0, help="The --label-delay-days you will train with.")
    ] = LABEL_DELAY_DAYS,
    sample_rows: Annotated[
        int, typer.Option(min=1, help="--suggest-schema: rows read to guess the schema.")
    ] = SAMPLE_ROWS,
) -> None:
    """Profile a transactions file before training on it, and say what to fix.

    Prints rows, time span, entities and their history lengths, fraud rate and label
    coverage, categorical cardinalities and missing shares, then warnings that each say what
    to do. With --suggest-schema it prints a commented schema guessed from the columns
    instead.
    """
    if suggest_schema:
        if schema is not None or json_out is not None:
            raise FraudseqError(
                "--suggest-schema drafts a schema from the file's columns and prints it; it "
                "takes no --schema or --json (save it with: fraudseq check DATA "
                "--suggest-schema > schema.toml)"
            )
        from fraudseq.schema_suggestion import suggest_schema as suggest

        suggestion = suggest(data, sample_rows)
        typer.echo(suggestion.to_toml(), nl=False)
        log.info(
            "schema guessed from the first %d rows of %s: check every line, then pass it "
            "with --schema",
            suggestion.sample_rows,
            data,
        )
        return

    check_outputs(
        {"--json": json_out}, inputs={"the transactions file": data, "the schema file": schema}
    )

    from fraudseq.data_profile import profile_transactions
    from fraudseq.errors import DataValidationError
    from fraudseq.schema import Schema, load_transactions

    columns = Schema.from_toml(schema) if schema is not None else None
    try:
        frame = load_transactions(data, columns)  # None: the simulator's, and says so
    except DataValidationError as err:
        if "missing column" in str(err):
            raise DataValidationError(
                f"{err} To draft a schema from the file's own columns: fraudseq check {data} "
                "--suggest-schema"
            ) from None
        raise
    profile = profile_transactions(
        frame,
        columns or Schema.simulator(),
        source=str(data),
        valid_days=valid_days,
        label_delay_days=label_delay_days,
    )
    console = output_console()
    console.print(summary_table(profile))
    if profile.columns:
        console.print(columns_table(profile))
    for warning in profile.warnings:
        console.print(f"warning: {warning}")
    if not profile.warnings:
        console.print("no warnings")
    if json_out is not None:
        from fraudseq.io import write_json

        write_json(profile.to_dict(), json_out)


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.3%}" if 0 < value < 0.01 else f"{value:.1%}"


def summary_table(p: DataProfile) -> Table:
    from rich.table import Table

    table = Table(title=p.source, show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    table.add_row("rows", f"{p.rows:,}")
    table.add_row("time span", f"{p.first} to {p.last} ({p.span_days:.1f} days)")
    if p.one_stream:
        table.add_row(
            "entities", "one stream (no entity column): each window is the file's previous rows"
        )
    else:
        table.add_row("entities", f"{p.entities:,} ({' + '.join(p.entity)})")
        table.add_row(
            "transactions per entity",
            f"median {p.history_median:g}, p90 {p.history_p90:g}, max {p.history_max:,}; "
            f"{_share(p.single_share)} of entities have one",
        )
    if p.label is None:
        table.add_row("label", "none (the schema names no label column, or the file lacks it)")
    else:
        per_week = "" if p.frauds_per_week is None else f", {p.frauds_per_week:,.1f} per week"
        table.add_row(
            "fraud",
            f"{p.frauds:,} frauds in {p.label!r}: {_share(p.fraud_rate)} of labelled rows"
            f"{per_week}",
        )
        table.add_row(
            "label coverage", f"{_share(p.label_coverage)} ({p.labelled:,} rows labelled)"
        )
        table.add_row(
            f"frauds in the last {p.valid_days:g} days",
            f"{p.valid_frauds:,} (train's default validation period)",
        )
    return table


def columns_table(p: DataProfile) -> Table:
    from rich.table import Table

    table = Table(title="feature columns")
    table.add_column("column")
    table.add_column("role")
    table.add_column("distinct", justify="right")
    table.add_column("missing", justify="right")
    for c in p.columns:
        distinct = "-" if c.distinct is None else f"{c.distinct:,}"
        table.add_row(c.column, c.role, distinct, _share(c.missing_share))
    return table
