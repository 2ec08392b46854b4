"""Commands that judge models: evaluate (hold-out or prequential), report, explain."""

from __future__ import annotations

import logging
import math
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from fraudseq.cli.app import (
    DataArg,
    Engine,
    EngineOpt,
    FromOpt,
    ModelDirArg,
    RayAddressOpt,
    ShardsOpt,
    UntilOpt,
    WorkDirOpt,
    app,
    check_outputs,
    model_label,
    output_console,
    output_file,
    printable,
    time_option,
)

# Imports of numpy, pandas, torch and the like stay inside the commands (see cli/app.py).
log = logging.getLogger("fraudseq")


class Protocol(StrEnum):
    holdout = "holdout"
    prequential = "prequential"


@app.command()
def evaluate(
    model_dir: ModelDirArg,
    data: DataArg,
    start: FromOpt = None,
    end: UntilOpt = None,
    json_out: Annotated[
        Path | None,
        typer.Option("--json", callback=output_file, help="Also write metrics as JSON."),
    ] = None,
    ci: Annotated[
        bool, typer.Option("--ci", help="Bootstrap confidence intervals for AP and AUC ROC.")
    ] = False,
    ci_level: Annotated[float, typer.Option(min=0.5, max=0.999, help="Interval level.")] = 0.95,
    resamples: Annotated[int, typer.Option(min=10, help="Bootstrap resamples.")] = 200,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
    protocol: Annotated[
        Protocol,
        typer.Option(
            help="holdout: the saved model on [--from, --until). prequential: retrain the "
            "model's family and hyperparameters on rolling folds (the Fraud Detection "
            "Handbook's scheme)."
        ),
    ] = Protocol.holdout,
    folds: Annotated[int, typer.Option(min=1, help="Prequential folds.")] = 4,
    train_days: Annotated[int, typer.Option(min=1, help="Training days per fold.")] = 7,
    delay_days: Annotated[
        int, typer.Option(min=0, help="Days between training and test (label delay).")
    ] = 7,
    test_days: Annotated[
        int, typer.Option(min=1, help="Test days per fold; folds shift back by this much.")
    ] = 7,
    fold_start: Annotated[
        str | None,
        typer.Option(
            "--start",
            callback=time_option,
            help="First training day of the LATEST fold (the handbook's anchor); earlier folds "
            "shift back by --test-days each. Default: the latest fold tests on the data's last "
            "days.",
        ),
    ] = None,
    valid_days: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Validation days just before each fold's training period (default: "
            "--train-days; inside the training period when the data starts too late).",
        ),
    ] = None,
    drop_known_frauds: Annotated[
        bool,
        typer.Option(
            "--drop-known-frauds/--keep-known-frauds",
            help="Prequential: drop test transactions of cards with a fraud known by then "
            "(from the training start to the test day minus delay+1 days).",
        ),
    ] = True,
    work_dir: WorkDirOpt = None,
    shards: ShardsOpt = None,
    engine: EngineOpt = Engine.local,
    ray_address: RayAddressOpt = None,
) -> None:
    """Print a model's metrics on labelled data, or run prequential validation.

    --protocol holdout (default): AUC ROC, AP, recall at 1% FPR and the alerting view at the
    model's threshold on [--from, --until). --protocol prequential: retrain the model's family
    on rolling folds and print per-fold and mean ± std AUC ROC, AP and CP@100.
    """
    from fraudseq.fraud_model import FraudModel
    from fraudseq.io import write_json

    check_outputs({"--json": json_out}, inputs={"the transactions file": data}, model_dir=model_dir)
    model = FraudModel.load(model_dir)
    if protocol is Protocol.prequential:
        from fraudseq.errors import FraudseqError
        from fraudseq.prequential import prequential_for_model

        if start is not None or end is not None or ci:
            raise FraudseqError(
                "--from, --until and --ci apply to --protocol holdout; prequential folds are "
                "placed with --start, --folds, --train-days, --delay-days and --test-days"
            )

        result = prequential_for_model(
            model,
            data,
            folds=folds,
            train_days=train_days,
            delay_days=delay_days,
            test_days=test_days,
            start=fold_start,
            valid_days=valid_days,
            drop_known_frauds=drop_known_frauds,
        )
        output_console().print(prequential_table(result))
    else:
        sharded = work_dir is not None or engine is not Engine.local
        if sharded:  # one pass: the labels and scores give the intervals too
            from fraudseq.engine.run import sharded_run
            from fraudseq.engine.scoring import scored_labels

            options = {"shards": shards, "engine": engine.value, "ray_address": ray_address}
            with sharded_run(
                data, model.schema_, work_dir=work_dir, require_label=True, **options
            ) as (built, mapper):
                labels, scores = scored_labels(model, built, start=start, end=end, mapper=mapper)
            result = model.evaluation(labels, scores, start, end)
        else:
            result = model.evaluate(data, start=start, end=end)
        if result["n_fraud"] == 0:
            log.warning(
                "no fraud among the %d transactions evaluated: AUC ROC, AP and recall at 1%% "
                "FPR are undefined (nan here, null in --json)",
                result["n"],
            )
        intervals = None
        if ci:
            from fraudseq import metrics
            from fraudseq.report.data import score_period

            if not sharded:
                scored = score_period(model, data, start=start, end=end)
                labels, scores = scored.labels, scored.score
            intervals = metrics.bootstrap_ci(
                labels, scores, n_resamples=resamples, level=ci_level, seed=seed
            )
            result["intervals"] = intervals
        for strategy, at in result["at_thresholds"].items():  # say why it never alerts
            if at["threshold"] == math.inf:
                at["unreachable"] = model.unreachable_.get(strategy) or (
                    f"{strategy} alerts on nothing (threshold +inf); this model was saved "
                    "without the reason: `fraudseq threshold` with this strategy shows it"
                )
        console = output_console()
        console.print(metrics_table(result, intervals))
        console.print(thresholds_table(result))
        for strategy, at in result["at_thresholds"].items():
            if "unreachable" in at:
                console.print(f"{strategy} never alerts: {at['unreachable']}", highlight=False)
    if json_out:
        write_json(result, json_out)


def metrics_table(result: dict, intervals: dict | None = None) -> Table:
    table = Table(title=f"{result['n']} transactions, {result['n_fraud']} fraud")
    table.add_column("metric")
    table.add_column("value", justify="right")
    if intervals:
        level = next(iter(intervals.values()))["level"]
        table.add_column(f"{level:.0%} interval", justify="right")
    c = result["confusion"]
    for key in (
        "average_precision",
        "auc_roc",
        "recall_at_1pct_fpr",
        "threshold",
        "precision",
        "recall",
        "f1",
    ):
        row = [key, _number(key, result[key], c["tp"] + c["fp"])]
        if intervals:
            ci = intervals.get(key)
            row.append(f"[{ci['low']:.4f}, {ci['high']:.4f}]" if ci else "")
        table.add_row(*row)
    row = ["confusion (tp fp / fn tn)", f"{c['tp']} {c['fp']} / {c['fn']} {c['tn']}"]
    table.add_row(*(row + [""] if intervals else row))
    if intervals:
        n = next(iter(intervals.values()))["n_resamples"]
        table.caption = f"percentile bootstrap, {n} resamples"
    return table


def thresholds_table(result: dict) -> Table:
    """The alerting view at each threshold strategy stored in the model; one whose threshold
    is +inf (never reached where it was chosen) says "unreachable", and `evaluate` prints
    why below the table."""
    table = Table(title="at the stored threshold strategies (* the model's)")
    for name in ("strategy", "threshold", "alerts", "precision", "recall", "f1"):
        table.add_column(name, justify="left" if name == "strategy" else "right")
    for strategy, at in result["at_thresholds"].items():
        table.add_row(
            strategy + (" *" if strategy == result["strategy"] else ""),
            *(
                _number(key, at[key], at["alerts"])
                for key in ("threshold", "alerts", "precision", "recall", "f1")
            ),
        )
    return table


def _number(key: str, value, alerts: int) -> str:
    """A table cell: precision without alerts is undefined (not 0), a threshold of +inf is
    one that was never reached."""
    if key == "threshold" and value == math.inf:
        return "unreachable"
    if key == "precision" and alerts == 0:
        return "n/a (no alerts)"
    return f"{value:,}" if key == "alerts" else f"{value:.4f}"


def prequential_table(result: dict) -> Table:
    s = result["settings"]
    table = Table(
        title=(
            f"prequential {s['model']}: {s['folds']} folds of {s['train_days']} training days, "
            f"{s['delay_days']} delay days, {s['test_days']} test days"
        ),
        caption="known compromised cards dropped from test days"
        if s["drop_known_frauds"]
        else "known compromised cards kept",
    )
    for name, justify in (
        ("fold", "right"),
        ("train", "left"),
        ("test", "left"),
        ("test tx", "right"),
        ("fraud", "right"),
        ("AUC ROC", "right"),
        ("AP", "right"),
        ("CP@100", "right"),
    ):
        table.add_column(name, justify=justify)
    for fold in result["folds"]:
        table.add_row(
            str(fold["index"]),
            f"{fold['train_from']} – {fold['train_until']}",
            f"{fold['test_from']} – {fold['test_until']}",
            f"{fold['n_test']:,}",
            f"{fold['n_fraud']:,}",
            f"{fold['auc_roc']:.4f}",
            f"{fold['average_precision']:.4f}",
            f"{fold['cp_at_100']:.4f}",
        )
    mean, std = result["mean"], result["std"]
    table.add_row(
        "mean ± std",
        "",
        "",
        "",
        "",
        *(f"{mean[k]:.3f} ± {std[k]:.3f}" for k in ("auc_roc", "average_precision", "cp_at_100")),
    )
    return table


@app.command()
def report(
    model_dir: ModelDirArg,
    data: DataArg,
    out: Annotated[
        Path, typer.Option(callback=output_file, help="HTML file to write (self-contained).")
    ],
    start: FromOpt = None,
    end: UntilOpt = None,
    top: Annotated[int, typer.Option(min=0, help="Top alerts to explain.")] = 5,
    resamples: Annotated[int, typer.Option(min=10, help="Bootstrap resamples.")] = 200,
    ci_level: Annotated[float, typer.Option(min=0.5, max=0.999, help="Interval level.")] = 0.95,
    # None: the report takes the model's own cost:FN,FP[,amount] strategy, else 1 and 10.
    cost_fp: Annotated[
        float | None,
        typer.Option(
            min=0, help="Cost of a false alert (default: the model's cost strategy, else 1)."
        ),
    ] = None,
    cost_fn: Annotated[
        float | None,
        typer.Option(min=0, help="Cost of a missed fraud (default: the model's, else 10)."),
    ] = None,
    cost_by_amount: Annotated[
        bool | None, typer.Option(help="A missed fraud costs --cost-fn times its amount.")
    ] = None,
    title: Annotated[str | None, typer.Option(help="Report title.")] = None,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
    work_dir: WorkDirOpt = None,
    shards: ShardsOpt = None,
    engine: EngineOpt = Engine.local,
    ray_address: RayAddressOpt = None,
) -> None:
    """Write a self-contained HTML report of the model on labelled [--from, --until).

    With --work-dir (or --engine ray) the data is read shard by shard: memory holds a shard
    and the period's scored rows (a few columns each), never the earlier history; the same
    report as in memory.
    """
    import contextlib

    from fraudseq.fraud_model import FraudModel
    from fraudseq.report import write_model_report

    check_outputs({"--out": out}, inputs={"the transactions file": data}, model_dir=model_dir)
    model = FraudModel.load(model_dir)
    options = {
        "start": start,
        "end": end,
        "model_dir": model_label(model_dir),
        "title": title,
        "top": top,
        "n_resamples": resamples,
        "level": ci_level,
        "seed": seed,
        "cost_fp": cost_fp,
        "cost_fn": cost_fn,
        "cost_by_amount": cost_by_amount,
    }
    with contextlib.ExitStack() as stack:
        if work_dir is not None or engine is not Engine.local:
            # Shard by shard: the period's rows only, and the top alerts' entities read
            # from their shards while the report is built (the shards stay until then).
            from fraudseq.engine.report import sharded_period
            from fraudseq.engine.run import sharded_run

            built, mapper = stack.enter_context(
                sharded_run(
                    data,
                    model.schema_,
                    work_dir=work_dir,
                    shards=shards,
                    engine=engine.value,
                    ray_address=ray_address,
                    require_label=True,
                )
            )
            options["scored"] = sharded_period(model, built, start=start, end=end, mapper=mapper)
        path = write_model_report(out, model, data, **options)
    log.info("report written to %s", path)
    print(path.resolve())


@app.command()
def explain(
    model_dir: ModelDirArg,
    data: DataArg,
    transaction_id: Annotated[str, typer.Option(help="Id of the transaction to explain.")],
    top: Annotated[int, typer.Option(min=1, help="Features and reasons to show.")] = 8,
    json_out: Annotated[
        Path | None,
        typer.Option("--json", callback=output_file, help="Also write the explanation as JSON."),
    ] = None,
) -> None:
    """Explain one transaction's score: which events and features drove it.

    Occlusion attribution of each earlier event of its window and of the transaction's own
    features, and attention weights (labelled as such) for attention models. Control
    characters in the data print as escapes (\\x1b), never raw.
    """
    from fraudseq.explain import explain as run_explain
    from fraudseq.explain import top_reasons
    from fraudseq.fraud_model import FraudModel
    from fraudseq.io import write_json

    check_outputs({"--json": json_out}, inputs={"the transactions file": data}, model_dir=model_dir)
    model = FraudModel.load(model_dir)
    explanation = run_explain(model, data, transaction_id)
    console = output_console()
    status = "ALERT" if explanation.alert else "no alert"
    truth = ""
    if explanation.label is not None:
        truth = "  label: " + ("fraud" if explanation.label else "legitimate")
        if explanation.label and explanation.scenario not in (None, "none"):
            truth += f" ({explanation.scenario})"
    # Every string from the data (ids, entity, categories, column names) goes through
    # printable(): the console prints without markup, and control characters become escapes.
    console.print(
        printable(
            f"transaction {explanation.transaction_id} of {model.schema_.entity_column} "
            f"{explanation.entity} at {explanation.time}: score {explanation.score:.4f} "
            f"(threshold {explanation.threshold:.4f}, {status}){truth}"
        ),
        highlight=False,
    )
    console.print(window_table(explanation, model.schema_))
    console.print(feature_table(explanation, top))
    reasons = top_reasons(explanation, min(top, 3))
    if reasons:
        console.print("top reasons", style="bold")
    else:
        console.print("no single event or feature raises it")
    for reason in reasons:
        console.print(
            printable(f"  {reason['attribution']:+.3f}  {reason['description']}"),
            highlight=False,
        )
    console.print(
        "attribution = change in log-odds when the event/feature is occluded: "
        + explanation.baseline,
        style="dim",
    )
    if json_out:
        write_json(explanation.to_dict(), json_out)


def window_table(explanation, schema) -> Table:
    import pandas as pd

    window = explanation.window
    has_attention = "attention" in window.columns
    has_truth = schema.label is not None and schema.label in window.columns
    shown = [c for c in schema.categorical if c in window.columns]
    table = Table(title="the window, oldest first (attribution: + pushes towards fraud)")
    table.add_column("step", justify="right")
    table.add_column("time")
    table.add_column(printable(schema.amount), justify="right")
    for name in shown:
        table.add_column(printable(name))
    if has_truth:
        table.add_column("truth")
    table.add_column("attribution", justify="right")
    if has_attention:
        table.add_column("attention (not attribution)", justify="right")
    n = len(window)
    for i in range(n):  # at most `window` rows
        row = window.iloc[i]
        cells = [
            "now" if row["current"] else str(i - n + 1),
            pd.Timestamp(row["event_time"]).strftime("%Y-%m-%d %H:%M:%S"),
            f"{row['event_amount']:.2f}",
            *(printable(row[c]) for c in shown),
        ]
        if has_truth:
            fraud = int(row[schema.label]) == 1
            scenario = row[schema.scenario] if schema.scenario in window.columns else None
            cells.append(
                ("fraud" + (f" ({printable(scenario)})" if scenario not in (None, "none") else ""))
                if fraud
                else "legit"
            )
        cells.append(f"{row['attribution']:+.3f}")
        if has_attention:
            cells.append(f"{row['attention']:.3f}")
        table.add_row(*cells, style="bold" if row["current"] else None)
    return table


def feature_table(explanation, top: int) -> Table:
    table = Table(title="features of this transaction with the largest effect")
    table.add_column("feature")
    table.add_column("value", justify="right")
    table.add_column("attribution", justify="right")
    for row in explanation.features.head(top).itertuples():
        value = f"{row.value:.4g}" if isinstance(row.value, float) else printable(row.value)
        table.add_row(printable(row.feature), value, f"{row.attribution:+.3f}")
    return table


@app.command()
def monitor(
    model_dir: ModelDirArg,
    data: DataArg,
    start: FromOpt = None,
    end: UntilOpt = None,
    reference_start: Annotated[
        str | None,
        typer.Option(
            "--reference-from",
            callback=time_option,
            help="Start of the reference period (default: the model's validation period).",
        ),
    ] = None,
    reference_end: Annotated[
        str | None,
        typer.Option(
            "--reference-until", callback=time_option, help="End of the reference period."
        ),
    ] = None,
    stored_reference: Annotated[
        bool,
        typer.Option(
            "--stored-reference",
            help="Compare with the distributions training stored in the model (of its "
            "validation period) instead of reading a reference period from DATA.",
        ),
    ] = False,
    json_out: Annotated[
        Path | None,
        typer.Option("--json", callback=output_file, help="Also write the drift as JSON."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(callback=output_file, help="Also write an HTML page (the report's style)."),
    ] = None,
    psi_threshold: Annotated[
        float, typer.Option(help="PSI from which a feature has drifted (moderate).")
    ] = 0.1,
    psi_significant: Annotated[
        float, typer.Option(help="PSI from which the drift is called significant.")
    ] = 0.25,
    distance_threshold: Annotated[
        float,
        typer.Option(help="Normed Wasserstein or Jensen-Shannon distance from which it drifted."),
    ] = 0.1,
    alert_rate_ratio: Annotated[
        float,
        typer.Option(help="The alert rate drifted at this many times the expected, or 1/it."),
    ] = 2.0,
    top: Annotated[int, typer.Option(min=1, help="Features in the table (worst first).")] = 15,
) -> None:
    """Drift of a model's features, score and alert rate on [--from, --until) against a
    reference period: PSI, and the normed Wasserstein distance (numeric) or Jensen-Shannon
    distance (categorical); worst features first. Labels are not needed.
    """
    from fraudseq.drift import Thresholds
    from fraudseq.drift import monitor as run_monitor
    from fraudseq.errors import FraudseqError
    from fraudseq.fraud_model import FraudModel
    from fraudseq.io import write_json

    if out is not None and out.suffix.lower() == ".json":
        raise FraudseqError(f"--out {out} writes the HTML page; write the JSON with --json {out}")
    thresholds = Thresholds(psi_threshold, psi_significant, distance_threshold, alert_rate_ratio)
    check_outputs(
        {"--json": json_out, "--out": out},
        inputs={"the transactions file": data},
        model_dir=model_dir,
    )
    if json_out is not None and out is not None and json_out.resolve() == out.resolve():
        raise FraudseqError(f"--json and --out both name {out}; give two files")
    model = FraudModel.load(model_dir)
    result = run_monitor(
        model,
        data,
        start=start,
        end=end,
        reference_start=reference_start,
        reference_end=reference_end,
        stored=stored_reference,
        thresholds=thresholds,
    )
    console = output_console()
    console.print(drift_table(result, top))
    console.print(alert_rate_line(result["alert_rate"]), highlight=False)
    if json_out is not None:
        write_json(result, json_out)
    if out is not None:
        from fraudseq.report.drift import write_drift_page

        write_drift_page(result, out, model_dir=model_label(model_dir))
        log.info("drift page written to %s", out)


def drift_table(result: dict, top: int) -> Table:
    """The score's and the `top` worst features' drift."""
    ref, cur, t = result["reference"], result["current"], result["thresholds"]
    n_drifted = len(result["drifted_features"])
    table = Table(
        title=(
            f"drift of [{cur['from'] or 'start'}, {cur['until'] or 'end'}) ({cur['n']:,} tx) "
            f"against [{ref['from'] or 'start'}, {ref['until'] or 'end'}) ({ref['n']:,} tx, "
            f"{ref['source']})"
        ),
        caption=(
            f"{n_drifted} of {len(result['features'])} features drifted; drifted: PSI >= "
            f"{t['psi']:g} (significant >= {t['psi_significant']:g}) or distance >= "
            f"{t['distance']:g}"
        ),
    )
    for name in ("feature", "PSI", "level", "distance", "kind", "drifted"):
        table.add_column(name, justify="left" if name in ("feature", "level", "kind") else "right")
    for e in [result["score"], *result["features"][:top]]:
        table.add_row(
            printable(e["name"]),
            f"{e['psi']:.4f}",
            e["psi_level"],
            f"{e['distance']:.4f}",
            e["distance_kind"],
            "DRIFT" if e["drifted"] else "",
            style="bold" if e["name"] == "score" and e is result["score"] else None,
        )
    return table


def alert_rate_line(a: dict) -> str:
    ratio = "n/a" if a["ratio"] is None or math.isnan(a["ratio"]) else f"{a['ratio']:.2f}x"
    return (
        f"alert rate {a['rate']:.4%} ({a['alerts']:,} of {a['n']:,} at threshold "
        f"{a['threshold']:.4f}) against {a['expected']:.4%} expected ({a['expected_from']}): "
        f"{ratio}{' DRIFT' if a['drifted'] else ''}"
    )


@app.command()
def compromise(
    data: DataArg,
    schema: Annotated[
        Path | None, typer.Option(help="Schema TOML; default: the simulator's columns.")
    ] = None,
    start: FromOpt = None,
    end: UntilOpt = None,
    window_days: Annotated[
        float,
        typer.Option(min=0.001, help="A visitor's fraud counts when within this many days."),
    ] = 30.0,
    top: Annotated[int, typer.Option(min=1, help="Counterparties to show and write.")] = 20,
    level: Annotated[
        float, typer.Option(min=0.5, max=0.999, help="Simultaneous interval level.")
    ] = 0.95,
    json_out: Annotated[
        Path | None,
        typer.Option("--json", callback=output_file, help="Also write the ranking as JSON."),
    ] = None,
) -> None:
    """Rank counterparties (merchants, terminals) by evidence of being a common point of
    compromise: of the entities that visited one in [--from, --until), how many had a known
    fraud within --window-days after, against the base rate of all visitors (lift, with an
    exact interval simultaneous over the counterparties; ranked by its lower bound).

    Labels of transactions at or after --until are not known and not used. Needs the
    schema's counterparty and label columns.
    """
    from fraudseq.compromise import check_schema, rank_counterparties
    from fraudseq.io import write_json
    from fraudseq.schema import UNKNOWN_LABELS, Schema, load_transactions

    check_outputs(
        {"--json": json_out}, inputs={"the transactions file": data, "the schema file": schema}
    )
    columns = Schema.from_toml(schema) if schema is not None else Schema.simulator()
    check_schema(columns, [columns.counterparty, columns.label])  # before reading the data
    frame = load_transactions(data, columns, require_label=UNKNOWN_LABELS)
    result = rank_counterparties(
        frame, columns, start=start, end=end, window_days=window_days, level=level
    )
    output_console().print(compromise_table(result, top))
    if json_out is not None:
        write_json({"data": str(data), **result.to_dict(top)}, json_out)


def compromise_table(result, top: int) -> Table:
    p = result.parameters
    table = Table(
        title=(
            f"common points of compromise by {printable(p['counterparty'])}, "
            f"[{p['from'] or 'data start'}, {p['until'] or 'data end'}): base rate "
            f"{result.base_rate:.2%} of {result.visitors:,} visitor pairs had a fraud within "
            f"{p['window_days']:g} days"
        ),
        caption=f"{p['interval']}. Visits: {p['visits']}. Labels: {p['labels']}.",
    )
    for name in (
        "rank",
        printable(p["counterparty"]),
        "visitors",
        "later fraud",
        "share",
        "lift",
        "lift interval",
        "suspected window (visits)",
        "days to fraud",
    ):
        table.add_column(name, justify="left" if "window" in name else "right")
    truth = "scenario" in result.table.columns
    if truth:
        table.add_column("first frauds' scenario (truth)")
    for row in result.top(top).itertuples(index=False):
        window = (
            f"{row.first_visit:%Y-%m-%d} – {row.last_visit:%Y-%m-%d}" if row.later_fraud else ""
        )
        cells = [
            str(row.rank),
            printable(row.counterparty),
            f"{row.visitors:,}",
            f"{row.later_fraud:,}",
            f"{row.share:.3f}",
            f"{row.lift:.2f}",
            f"{row.lift_low:.2f} – {row.lift_high:.2f}",
            window,
            "" if math.isnan(row.median_days_to_fraud) else f"{row.median_days_to_fraud:.1f}",
        ]
        if truth:
            cells.append(printable(row.scenario) if row.later_fraud else "")
        table.add_row(*cells)
    return table
