"""Commands that make data and models: simulate, train, score."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from fraudseq.choices import COMBINERS, LOSSES, MEMBERS, MODELS, PRETRAINABLE
from fraudseq.cli.app import (
    DataArg,
    Engine,
    EngineOpt,
    FromOpt,
    ModelDirArg,
    RayAddressOpt,
    RewrittenModelDirArg,
    ShardsOpt,
    UntilOpt,
    WorkDirOpt,
    app,
    check_output_parent,
    check_outputs,
    model_label,
    one_of,
    output_console,
    output_file,
    strategy_option,
    table_file,
    time_option,
)
from fraudseq.errors import FraudseqError

# Imports of numpy, pandas, torch and the like stay inside the commands (see cli/app.py).
STRATEGY_HELP = "best-f1 | cost:FN,FP[,amount] | recall:R | precision:P | budget:K | percentile:P"

log = logging.getLogger("fraudseq")


def opt_in_scenarios(param: typer.CallbackParam, value: list[str] | None) -> list[str] | None:
    """Each --scenario is an opt-in typology of the simulator."""
    from fraudseq.simulate import OPT_IN_SCENARIOS

    for name in value or []:
        one_of(OPT_IN_SCENARIOS)(param, name)
    return value


@app.command()
def simulate(
    out: Annotated[
        Path, typer.Option(callback=table_file, help="Output file (.csv, .csv.gz or .parquet).")
    ],
    accounts: Annotated[int, typer.Option(min=1, help="Number of card accounts.")] = 2000,
    days: Annotated[int, typer.Option(min=1, help="Number of days.")] = 60,
    seed: Annotated[int, typer.Option(min=0, help="Random seed.")] = 0,
    start: Annotated[str, typer.Option(callback=time_option, help="First day.")] = "2026-01-01",
    scenario: Annotated[
        list[str] | None,
        typer.Option(
            "--scenario",
            callback=opt_in_scenarios,
            help="Add an opt-in typology (repeat for several): skimmer (cards cloned at a "
            "skimmed place, used elsewhere 2-20 days later) or new_scheme (a scheme that "
            "starts only at --new-scheme-start).",
        ),
    ] = None,
    new_scheme_start: Annotated[
        str | None,
        typer.Option(
            callback=time_option,
            help="When new_scheme starts (default: 70% into the period).",
        ),
    ] = None,
) -> None:
    """Write simulated card transactions with labelled fraud scenarios."""
    from fraudseq.io import write_table
    from fraudseq.simulate import simulate as run_simulation

    check_outputs({"--out": out})
    if new_scheme_start is not None and "new_scheme" not in (scenario or []):
        raise FraudseqError("--new-scheme-start needs --scenario new_scheme")
    try:
        frame = run_simulation(
            accounts=accounts,
            days=days,
            seed=seed,
            start=start,
            scenarios=tuple(scenario or ()),
            new_scheme_start=new_scheme_start,
        )
    except ValueError as err:  # a start outside the period
        raise FraudseqError(str(err)) from None
    write_table(frame, out)
    log.info("wrote %d transactions (%d fraud) to %s", len(frame), frame["is_fraud"].sum(), out)


SchemaOpt = Annotated[
    Path | None, typer.Option(help="Schema TOML; default: the simulator's columns.")
]
TrainFromOpt = Annotated[
    str | None, typer.Option(callback=time_option, help="First training date (inclusive).")
]
TrainUntilOpt = Annotated[
    str | None, typer.Option(callback=time_option, help="Train on time < this date.")
]
ValidDaysOpt = Annotated[
    float, typer.Option(min=0, help="Last days before --train-until used for validation.")
]
EpochsOpt = Annotated[int, typer.Option(min=1, help="Maximum epochs (early stopping on AP).")]
SeedOpt = Annotated[int, typer.Option(help="Random seed; the same seed gives the same model.")]
# The network options `train` and `pretrain` share (with --init, train takes the encoder's
# --window, --hidden-size, --transformer-layers and --transformer-heads unless given).
WindowOpt = Annotated[int, typer.Option(min=1, help="Events per window.")]
BatchSizeOpt = Annotated[int, typer.Option(min=1)]
HiddenSizeOpt = Annotated[int, typer.Option(min=1)]
DropoutOpt = Annotated[
    float, typer.Option(min=0, max=1, help="Dropout rate of the networks (below 1).")
]
LearningRateOpt = Annotated[float, typer.Option(min=0)]
TransformerLayersOpt = Annotated[
    int, typer.Option(min=1, help="transformer: blocks (its width is --hidden-size).")
]
TransformerHeadsOpt = Annotated[int, typer.Option(min=1, help="transformer: attention heads.")]


TrainWorkDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--work-dir",
        help="Stream the data through shards by entity written under this directory: memory "
        "bounded by a shard rather than the file. The same encoder; with one shard the same "
        "model, with several the windows come shard by shard (a different training order). "
        "A finished run's shards are reused; the encoded shards are removed after training.",
    ),
]


def _model_dir(param: typer.CallbackParam, value: Path) -> Path:
    """A model directory to write, checked before training rather than after it: new,
    empty or a fraudseq model directory and nothing else (artifacts.check_replaceable)."""
    from fraudseq.artifacts import check_replaceable
    from fraudseq.errors import ModelDirectoryError

    if value.name in ("", ".", ".."):  # replacing the working directory (or root) as a whole
        raise FraudseqError(f"{param.opts[0]} {value}: give the model directory a name")
    try:
        check_replaceable(value)
    except ModelDirectoryError as exc:
        raise FraudseqError(f"{param.opts[0]} {exc}") from None
    check_output_parent(value, param.opts[0])
    return value


def _class_weight(value: str) -> str | float:
    if value in ("auto", "none"):
        return value
    try:
        return float(value)
    except ValueError:
        raise typer.BadParameter("use auto, none or a number") from None


@app.command()
def train(
    ctx: typer.Context,
    data: DataArg,
    out: Annotated[
        Path,
        typer.Option(
            callback=_model_dir,
            help="Model directory to write (replaced only on success).",
        ),
    ],
    schema: SchemaOpt = None,
    model: Annotated[
        str, typer.Option(callback=one_of(MODELS), help=f"Model family: {', '.join(MODELS)}.")
    ] = "ensemble",
    train_from: TrainFromOpt = None,
    train_until: TrainUntilOpt = None,
    valid_days: ValidDaysOpt = 7,
    epochs: EpochsOpt = 10,
    window: WindowOpt = 16,
    batch_size: BatchSizeOpt = 512,
    hidden_size: HiddenSizeOpt = 32,
    dropout: DropoutOpt = 0.1,
    learning_rate: LearningRateOpt = 1e-3,
    loss: Annotated[str, typer.Option(callback=one_of(LOSSES), help="bce or focal.")] = "bce",
    focal_alpha: Annotated[float, typer.Option(min=0, max=1)] = 0.25,
    focal_gamma: Annotated[float, typer.Option(min=0)] = 2.0,
    class_weight: Annotated[
        str, typer.Option(help="Positive-class weight: auto (sqrt of the ratio), none or N.")
    ] = "auto",
    oversample: Annotated[
        float | None, typer.Option(help="Oversample positives to this positive:negative ratio.")
    ] = None,
    fraud_ratio: Annotated[
        float | None, typer.Option(help="Sample negatives each epoch so fraud is this share.")
    ] = None,
    threshold: Annotated[
        str | None, typer.Option(callback=strategy_option, help=STRATEGY_HELP)
    ] = None,
    percentile: Annotated[
        float | None,
        typer.Option(min=0, max=100, help="Threshold at this validation score percentile."),
    ] = None,
    label_delay_days: Annotated[
        float, typer.Option(min=0, help="Labels become known this many days after the event.")
    ] = 7,
    members: Annotated[
        str,
        typer.Option(
            callback=one_of(MEMBERS, many=True), help="Ensemble members, comma-separated."
        ),
    ] = "lstm,xgboost",
    combiner: Annotated[
        str, typer.Option(callback=one_of(COMBINERS), help="Ensemble: average or stacker.")
    ] = "average",
    novelty_ap_loss: Annotated[
        float,
        typer.Option(
            min=0,
            max=1,
            help="Ensemble with an unsupervised member (autoencoder, surprise): the share of "
            "validation AP its novelty boost may cost (0: none).",
        ),
    ] = 0.0,
    bidirectional: Annotated[
        bool, typer.Option(help="lstm-attention: a bidirectional LSTM under the attention.")
    ] = False,
    attention_heads: Annotated[
        int, typer.Option(min=1, help="lstm-attention: attention heads.")
    ] = 4,
    transformer_layers: TransformerLayersOpt = 2,
    transformer_heads: TransformerHeadsOpt = 2,
    n_estimators: Annotated[
        int,
        typer.Option(
            min=1,
            help="xgboost (and an ensemble's): boosting rounds at most; early stopping "
            "on the validation AP may end sooner.",
        ),
    ] = 600,
    features: Annotated[
        str | None,
        typer.Option(
            help="Feature blocks, comma-separated (default: the family's default set); "
            "opt-in blocks such as exposure are named here with the others.",
        ),
    ] = None,
    seed: SeedOpt = 0,
    work_dir: TrainWorkDirOpt = None,
    shards: ShardsOpt = None,
    engine: Annotated[
        Engine,
        typer.Option(
            help="ray: the feature passes as Ray tasks and a torch family trained with Ray "
            "Train (DDP on --ray-workers workers; see --ray-address); local: here."
        ),
    ] = Engine.local,
    ray_address: RayAddressOpt = None,
    ray_workers: Annotated[
        int, typer.Option(min=1, help="With --engine ray: Ray Train workers (processes).")
    ] = 2,
    init: Annotated[
        Path | None,
        typer.Option(
            help="Fine-tune from this pretrained encoder (`fraudseq pretrain`; lstm, gru, "
            "transformer, or an ensemble's member of the encoder's family): its weights, "
            "feature encoder (with counterparty_risk added) and, unless given, its --window, "
            "--hidden-size, --transformer-layers and --transformer-heads.",
        ),
    ] = None,
) -> None:
    """Train a model on labelled transactions before --train-until.

    With --engine ray the data streams through shards (under --work-dir, else a temporary
    directory), and the model trains on --ray-workers Ray Train workers, each taking its
    slice of every batch: the single-process computation (see docs/scale.md)."""
    from fraudseq.fraud_model import FraudModel

    check_outputs(
        {"--out": out},
        inputs={
            "the transactions file": data,
            "the schema file": schema,
            "the encoder directory": init,
        },
        directory=True,
    )
    if percentile is not None:
        threshold = f"percentile:{percentile}"
    architecture = {
        "window": window,
        "hidden_size": hidden_size,
        "transformer_layers": transformer_layers,
        "transformer_heads": transformer_heads,
    }
    if init is None:
        build = FraudModel
    else:  # the encoder's architecture, but for the options given on the command line
        architecture = {k: v for k, v in architecture.items() if _given(ctx, k)}

        def build(family, **params):
            return FraudModel.from_encoder(init, family, **params)

    fitted = build(
        model,
        **architecture,
        epochs=epochs,
        batch_size=batch_size,
        dropout=dropout,
        learning_rate=learning_rate,
        loss=loss,
        focal_alpha=focal_alpha,
        focal_gamma=focal_gamma,
        class_weight=_class_weight(class_weight),
        oversample=oversample,
        fraud_ratio=fraud_ratio,
        threshold=threshold,
        label_delay_days=label_delay_days,
        members=tuple(members.split(",")),
        combiner=combiner,
        novelty_ap_loss=novelty_ap_loss,
        bidirectional=bidirectional,
        attention_heads=attention_heads,
        n_estimators=n_estimators,
        features=tuple(features.split(",")) if features else None,
        seed=seed,
    )
    fitted.fit(
        data,
        _schema(schema),
        train_from=train_from,
        train_until=train_until,
        valid_days=valid_days,
        work_dir=work_dir,
        shards=shards,
        engine=engine.value,
        ray_address=ray_address,
        ray_workers=ray_workers,
    )
    fitted.save(out)
    m = fitted.validation_metrics_
    log.info(
        "%s AP %.4f  AUC ROC %.4f  threshold %.4f (%s)",
        "validation" if fitted.training_period_["n_valid"] else "no validation: in-sample",
        m["average_precision"],
        m["auc_roc"],
        fitted.threshold_,
        fitted.threshold_strategy(),
    )
    log.info("model saved to %s", out)


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether option `name` was given (on the command line or by its environment variable)
    rather than left at its default."""
    source = ctx.get_parameter_source(name)  # by name: typer may bring its own click
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


@app.command()
def pretrain(
    data: DataArg,
    out: Annotated[
        Path,
        typer.Option(
            callback=_model_dir,
            help="Encoder directory to write (replaced only on success).",
        ),
    ],
    schema: SchemaOpt = None,
    until: Annotated[
        str | None,
        typer.Option(callback=time_option, help="Pretrain on time < this date (default: all)."),
    ] = None,
    model: Annotated[
        str,
        typer.Option(
            callback=one_of(PRETRAINABLE),
            help=f"The family whose encoder to pretrain: {', '.join(PRETRAINABLE)}.",
        ),
    ] = "transformer",
    valid_days: Annotated[
        float,
        typer.Option(
            min=0,
            help="Last days before --until held out: early stopping on their masked loss.",
        ),
    ] = 7,
    epochs: Annotated[
        int, typer.Option(min=1, help="Maximum epochs (early stopping on the held-out loss).")
    ] = 10,
    window: WindowOpt = 16,
    batch_size: BatchSizeOpt = 256,
    hidden_size: HiddenSizeOpt = 32,
    dropout: DropoutOpt = 0.1,
    learning_rate: LearningRateOpt = 2e-3,
    transformer_layers: TransformerLayersOpt = 2,
    transformer_heads: TransformerHeadsOpt = 2,
    windows_per_epoch: Annotated[
        int, typer.Option(min=1, help="Training windows sampled per epoch (seeded), at most.")
    ] = 100_000,
    seed: SeedOpt = 0,
) -> None:
    """Pretrain a sequence encoder without labels, by masked-event modelling, on every
    transaction before --until (labelled or not; the label column is never read).

    `fraudseq train --init OUT` fine-tunes a classifier of the same family from it (see
    docs/pretraining.md)."""
    from fraudseq.fraud_model import FraudModel
    from fraudseq.pretraining import pretrain as run_pretraining

    check_outputs(
        {"--out": out},
        inputs={"the transactions file": data, "the schema file": schema},
        directory=True,
    )
    params = FraudModel(
        model,
        window=window,
        epochs=epochs,
        batch_size=batch_size,
        hidden_size=hidden_size,
        dropout=dropout,
        learning_rate=learning_rate,
        transformer_layers=transformer_layers,
        transformer_heads=transformer_heads,
        seed=seed,
    )
    encoder = run_pretraining(
        data,
        _schema(schema),
        params,
        until=until,
        valid_days=valid_days,
        windows_per_epoch=windows_per_epoch,
    )
    encoder.save(out)
    log.info("encoder saved to %s", out)


def _schema(path: Path | None):
    from fraudseq.schema import Schema

    return Schema.from_toml(path) if path else Schema.simulator()


@app.command()
def threshold(
    model_dir: RewrittenModelDirArg,
    data: DataArg,
    strategy: Annotated[str, typer.Option(callback=strategy_option, help=STRATEGY_HELP)],
    start: FromOpt = None,
    end: UntilOpt = None,
) -> None:
    """Re-choose the alert threshold without retraining (default: on the validation period).

    Prints what the new threshold does there (alerts per day, precision, recall) before
    saving it in the model directory.
    """
    from fraudseq.fraud_model import FraudModel

    # the model directory is replaced by the re-thresholded model: it must not hold the data
    check_outputs({"MODEL_DIR": model_dir}, inputs={"the transactions file": data}, directory=True)
    model = FraudModel.load(model_dir)
    before = f"{model.threshold_strategy()} (threshold {model.threshold_:.6f})"
    model.rethreshold(data, strategy, start=start, end=end)
    output_console().print(threshold_summary(model, start, end, before), highlight=False)
    model.save(model_dir)
    log.info("threshold %.6f (%s) saved to %s", model.threshold_, strategy, model_dir)


def threshold_summary(model, start: str | None, end: str | None, before: str) -> str:
    """What the model's threshold does on the period it was just chosen on: the threshold,
    alerts per day, precision and recall, or why the strategy alerts on nothing."""
    m, strategy = model.validation_metrics_, model.threshold_strategy()
    period = model.training_period_
    if start is None and end is None and period.get("valid_from") is not None:
        where = f"the validation period [{period['valid_from']}, {period['valid_end']})"
    else:
        where = f"[{start or 'the start'}, {end or 'the end'})"
    c = m["confusion"]
    alerts = c["tp"] + c["fp"]
    lines = [
        f"{strategy} on {where}: {m['n']:,} transactions, {m['n_fraud']:,} fraud, "
        f"{m['days']:g} days",
        f"  threshold       {model.threshold_:.6f}  (was {before})",
    ]
    if model.threshold_ == float("inf"):
        reason = model.unreachable_.get(strategy) or f"{strategy} alerts on nothing"
        lines.append(f"  no alerts: {reason}")
    lines += [
        f"  alerts per day  {alerts / m['days']:,.2f}  ({alerts:,} alerts)",
        f"  precision       {m['precision']:.4f}  ({c['tp']:,} of {alerts:,} alerts are fraud)"
        if alerts
        else "  precision       n/a  (no alerts)",
        f"  recall          {m['recall']:.4f}  ({c['tp']:,} of {m['n_fraud']:,} fraud alerted)",
    ]
    return "\n".join(lines)


@app.command()
def compare(
    data: DataArg,
    models: Annotated[
        str,
        typer.Option(callback=one_of(MODELS, many=True), help="Comma-separated model families."),
    ] = "lstm,xgboost",
    schema: SchemaOpt = None,
    train_from: TrainFromOpt = None,
    train_until: TrainUntilOpt = None,
    valid_days: ValidDaysOpt = 7,
    epochs: EpochsOpt = 10,
    seed: SeedOpt = 0,
    json_out: Annotated[
        Path | None, typer.Option("--json", callback=output_file, help="Write the table as JSON.")
    ] = None,
) -> None:
    """Train each model on the same split and compare them on the data after --train-until."""
    from fraudseq.comparison import compare_models, comparison_table
    from fraudseq.io import write_json

    check_outputs(
        {"--json": json_out}, inputs={"the transactions file": data, "the schema file": schema}
    )
    rows = compare_models(
        data,
        _schema(schema),
        [m.strip() for m in models.split(",") if m.strip()],
        train_from=train_from,
        train_until=train_until,
        valid_days=valid_days,
        epochs=epochs,
        seed=seed,
    )
    output_console().print(comparison_table(rows))
    if json_out:
        write_json(rows, json_out)


@app.command()
def score(
    model_dir: ModelDirArg,
    data: DataArg,
    out: Annotated[
        Path, typer.Option(callback=table_file, help="Scores file: transaction_id,score,alert.")
    ],
    start: FromOpt = None,
    end: UntilOpt = None,
    work_dir: WorkDirOpt = None,
    shards: ShardsOpt = None,
    engine: EngineOpt = Engine.local,
    ray_address: RayAddressOpt = None,
) -> None:
    """Score transactions in [--from, --until); earlier ones serve as history.

    In a CSV file, ids that a spreadsheet would run as a formula (starting with =, +, -, @,
    a tab or a carriage return) are prefixed with a single quote; Parquet keeps them as
    they are."""
    from fraudseq.fraud_model import FraudModel
    from fraudseq.io import write_table

    check_outputs({"--out": out}, inputs={"the transactions file": data}, model_dir=model_dir)
    model = FraudModel.load(model_dir)
    if work_dir is not None or engine is not Engine.local:
        from fraudseq.engine.run import sharded_run
        from fraudseq.engine.scoring import score_file

        options = {"shards": shards, "engine": engine.value, "ray_address": ray_address}
        with sharded_run(data, model.schema_, work_dir=work_dir, **options) as (built, mapper):
            n, alerts = score_file(model, built, out, start=start, end=end, mapper=mapper)
    else:
        scores = model.score(data, start=start, end=end)
        write_table(scores, out, for_spreadsheets=True)
        n, alerts = len(scores), int(scores["alert"].sum())
    log.info("scored %d transactions (%d alerts) into %s", n, alerts, out)


@app.command()
def export(
    model_dir: ModelDirArg,
    out: Annotated[
        Path,
        typer.Option(
            help="Directory to write (model.onnx, inputs.json); new, empty or an earlier "
            "export, replaced only on success.",
        ),
    ],
    fmt: Annotated[
        str, typer.Option("--format", callback=one_of(("onnx",)), help="Export format: onnx.")
    ] = "onnx",
) -> None:
    """Export the model's window network as ONNX, with inputs.json describing its inputs
    (feature names, order and scaling, vocabularies, window length, padding, threshold).

    The graph is checked against torch (logits within 1e-5 on random windows of every length)
    before anything is written. xgboost, autoencoder and ensemble models have no one window
    network: the command says what there is instead and exits 1."""
    from fraudseq.export import export_model
    from fraudseq.fraud_model import FraudModel

    if out.name in ("", ".", ".."):
        raise FraudseqError(f"--out {out}: give the export directory a name")
    check_outputs(
        {"--out": out}, inputs={"the model directory": model_dir}, model_dir=model_dir,
        directory=True,
    )  # fmt: skip
    check_output_parent(out, "--out")
    model = FraudModel.load(model_dir)
    export_model(model, out, source=model_label(model_dir))
