"""Label efficiency (issue 22, part 5): test AP against the share of training labels kept,
for XGBoost, the LSTM and the transformer, each from scratch and (the two networks)
fine-tuned from a self-supervised encoder.

    OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python benchmarks/label_efficiency.py \
        --dataset simulator [--arms xgboost,lstm,transformer] [--fractions 0.01,0.05,...]
    .venv/bin/python benchmarks/label_efficiency.py --dataset handbook
    .venv/bin/python benchmarks/label_efficiency.py --quick      # a tiny smoke run
    .venv/bin/python benchmarks/label_efficiency.py --markdown   # the tables from the JSON

For each label fraction, the labels of a seeded random share of the accounts (entities) of
the training period are kept and every other training label is emptied (`blank_labels`):
those rows stay, as history and as pretraining data, but are never a training target.
Validation and test labels are never emptied, and the test period is scored against its
true labels. The kept accounts are nested: each fraction keeps the first accounts of one
seeded order, so 5% holds the 1%.

Arms (`--arms`), each run as the `fraudseq` CLI in a subprocess on a Parquet file of the
blanked data (`train`, then `score` of the test period from that same file, so the
label-derived features see only the labels kept; metrics from `fraudseq.metrics`):
- `xgboost`, `lstm`, `transformer`: `fraudseq train --model NAME` from scratch;
- `lstm-pretrained`, `transformer-pretrained`: `fraudseq train --model NAME --init ENCODER`,
  where ENCODER is `fraudseq pretrain --model NAME --until TEST_START`, run once per family
  and reused across fractions and seeds, on the transactions before the test period with
  every label emptied (pretraining cannot read a label, let alone a test label);
- `lstm-label-free`: the LSTM from scratch on the label-free blocks pretraining uses
  (`--features`, without `counterparty_risk`): what the label block adds. The pretrained arms
  have it: `train --init` adds it at fine-tuning;
- at 100% only: `ensemble`, today's default model (`fraudseq train` without `--model`: the
  average of an LSTM and XGBoost), and `ensemble-pretrained`, `train --model ensemble
  --init` the LSTM encoder: the same members, the LSTM fine-tuned from the encoder.

Datasets (`--dataset`):
- `simulator`: `benchmarks/compare_models.py`'s data and split (2000 accounts x 60 days,
  seed 0; training before 2026-02-16 with its last 7 days for validation; test the 14 days
  after). Labels emptied before 2026-02-09.
- `handbook`: ../shared/data/handbook_transactions.csv.gz, protocol B of
  `benchmarks/handbook.py` (training before 2018-08-01, its last 7 days for validation, the
  delay week, test 2018-08-08..08-14 without the known compromised cards, `handbook.test_set`).
  Labels emptied before 2018-07-25; pretraining reads transactions before 2018-08-08.

Writes benchmarks/results/label_efficiency-DATASET.json (machine, command, load averages,
start and finish times, every run) and docs/img/label_efficiency-DATASET.png (AP against the
label fraction, log x axis, one line per arm, dashed: the best AP with every label), both
atomically, and prints the tables and the issue's three goals. A run of some arms keeps the
other arms' runs of an earlier run with the same settings (so the pretrained arms can be
added later). `--quick` (tiny data, one epoch) writes `...-quick` files.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from compare_models import SIMULATOR  # noqa: E402
from handbook import PROTOCOLS, TEST_FROM, TEST_UNTIL, cp_at_100, test_set  # noqa: E402
from handbook_protocol import DATA as HANDBOOK_DATA  # noqa: E402
from handbook_protocol import load_average, table  # noqa: E402
from machine import describe, save_results  # noqa: E402

from fraudseq import metrics  # noqa: E402
from fraudseq.fraud_model import default_features  # noqa: E402
from fraudseq.io import atomic_path, write_table  # noqa: E402
from fraudseq.schema import Schema, load_transactions  # noqa: E402
from fraudseq.simulate import simulate  # noqa: E402
from fraudseq.splits import parse_time, validation_start  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks/results"
IMAGES = ROOT / "docs/img"
FRACTIONS = (0.01, 0.05, 0.10, 0.25, 1.0)
GOAL_FRACTION = 0.10
#: The issue's goals: at 10% of labels the best pretrained arm reaches this share of the best
#: AP with every label, and beats XGBoost at 10% by this much AP.
GOAL_SHARE, GOAL_MARGIN = 0.90, 0.03


@dataclass(frozen=True)
class Arm:
    """One line of the table: a `fraudseq train` family, with `--init` from the encoder
    pretrained for family `init`, at every fraction or (`full_only`) with every label."""

    model: str | None  # None: `train` without --model, today's default
    init: str | None = None
    full_only: bool = False
    features: tuple[str, ...] | None = None  # `--features`; None: the family's default

    @property
    def pretrained(self) -> bool:
        return self.init is not None


#: The default blocks without the label blocks: what `fraudseq pretrain` trains on.
LABEL_FREE = default_features("autoencoder")
ARMS = {
    "xgboost": Arm("xgboost"),
    "lstm": Arm("lstm"),
    "lstm-pretrained": Arm("lstm", init="lstm"),
    "transformer": Arm("transformer"),
    "transformer-pretrained": Arm("transformer", init="transformer"),
    # the LSTM from scratch on the blocks pretraining has (no label block): what the label
    # block adds, which the pretrained arms get at fine-tuning
    "lstm-label-free": Arm("lstm", features=LABEL_FREE),
    "ensemble": Arm(None, full_only=True),
    # `train --model ensemble --init`: the default members, the LSTM from its encoder
    "ensemble-pretrained": Arm("ensemble", init="lstm", full_only=True),
}
BOX = " ╭╮╰╯│─"
#: Plot colours by family (a pretrained arm: its family's colour, dashed).
COLOURS = {"xgboost": "C0", "lstm": "C1", "transformer": "C2", None: "C3"}
#: What `--quick` trains: every family tiny, for a smoke run.
QUICK_PARAMS = ("--n-estimators", "20")
#: `--quick`'s network size, given to `pretrain` too (`train --init` refuses another).
QUICK_NETWORK = ("--hidden-size", "8", "--window", "8")


def blank_labels(
    frame: pd.DataFrame, schema: Schema, fraction: float, *, until, seed: int
) -> tuple[pd.DataFrame, np.ndarray]:
    """`frame` with the labels before `until` emptied (NaN: not known) except those of a
    seeded random `fraction` of the entities that have rows there; later labels unchanged.

    Returns the new frame (the input is not modified) and the kept entities. The entities
    are ordered once by `seed` (a permutation of their sorted values, so the row order does
    not matter) and the first round(fraction x n) are kept, at least one: a larger fraction
    keeps a superset of a smaller one's."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction {fraction} must be in (0, 1]")
    entity, label = frame[schema.entity_column], frame[schema.label]
    before = (frame[schema.time] < parse_time(until)).to_numpy()
    entities = np.sort(entity[before].unique())
    order = np.random.default_rng(seed).permutation(len(entities))
    kept = entities[order[: max(1, round(fraction * len(entities)))]]
    blank = before & ~entity.isin(kept).to_numpy()
    labels = label.to_numpy(dtype=np.float64, copy=True)
    labels[blank] = np.nan
    return frame.assign(**{schema.label: labels}), kept


@dataclass(frozen=True)
class Dataset:
    """A frame, its schema file and its split: training before `train_until` with its last
    `valid_days` for validation, test [test_from, test_until)."""

    name: str
    frame: pd.DataFrame
    schema_file: Path
    train_until: str
    valid_days: float
    test_from: str
    test_until: str | None

    @property
    def schema(self) -> Schema:
        return Schema.from_toml(self.schema_file)

    @property
    def blank_until(self) -> pd.Timestamp:
        """The end of the period whose labels are emptied: validation's start."""
        return validation_start(parse_time(self.train_until), self.valid_days)

    def test(self) -> pd.DataFrame:
        """The test rows, with their true labels."""
        s, times = self.schema, self.frame[self.schema.time]
        if self.name == "handbook":
            return test_set(self.frame, s, week_from=self.test_from)
        until = times.max() + pd.Timedelta(1) if self.test_until is None else self.test_until
        return self.frame[((times >= parse_time(self.test_from)) & (times < until)).to_numpy()]


def load_dataset(name: str, quick: bool, data: str | None = None) -> Dataset:
    """The simulator as `compare_models.py` uses it, or the handbook's protocol B; `quick`:
    a few hundred accounts (the handbook: 300 customers from 2018-06-01)."""
    if name == "simulator":
        schema_file = ROOT / "schemas/simulator.toml"
        frame = simulate(accounts=300, days=40, seed=7) if quick else SIMULATOR["data"]()
        split = {"train_until": "2026-01-31", "valid_days": 7} if quick else SIMULATOR["split"]
        frame = load_transactions(frame, Schema.from_toml(schema_file), require_label=True)
        return Dataset(
            name, frame, schema_file, **split, test_from=split["train_until"], test_until=None
        )
    if name != "handbook":
        raise SystemExit(f"unknown --dataset {name!r}: simulator or handbook")
    schema_file = ROOT / "schemas/handbook.toml"
    schema = Schema.from_toml(schema_file)
    path = Path(data or HANDBOOK_DATA)
    if not path.exists():
        raise SystemExit(f"{path} does not exist: give the handbook's file with --data")
    frame = load_transactions(path, schema, require_label=True)
    times = frame[schema.time]
    keep = (times < TEST_UNTIL).to_numpy()  # nothing after the test week is read
    if quick:
        customers = np.sort(frame[schema.entity_column].unique())[:300]
        keep = keep & (times >= "2018-06-01").to_numpy()
        keep = keep & frame[schema.entity_column].isin(customers).to_numpy()
    protocol = PROTOCOLS["B"]
    return Dataset(
        name,
        frame[keep].reset_index(drop=True),
        schema_file,
        protocol["train_until"],
        protocol["valid_days"],
        str(TEST_FROM.date()),
        str(TEST_UNTIL.date()),
    )


def fraudseq(*args, log: Path) -> float:
    """Run `fraudseq ARGS` with this checkout's code; its output goes to `log`. Returns the
    wall seconds; raises RuntimeError with the output's last lines when it fails."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])
        ),
    }
    command = [sys.executable, "-m", "fraudseq", *map(str, args)]
    started = time.perf_counter()
    with open(log, "w") as out:
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        # the last lines of the output, without the boxes rich draws around an error
        lines = [" ".join(line.strip(BOX).split()) for line in log.read_text().splitlines()]
        tail = [line for line in lines if line][-3:]
        raise RuntimeError(f"fraudseq {args[0]} exited {done.returncode}: " + " | ".join(tail))
    return seconds


def held_out_metrics(test: pd.DataFrame, schema: Schema, score: np.ndarray) -> dict:
    """AP, AUC ROC, recall at 1% FPR and CP@100 of `score` on the test rows (the metrics
    `fraudseq.comparison` reports; CP@100 by `handbook.cp_at_100`)."""
    y = test[schema.label].to_numpy()
    return {
        "average_precision": metrics.average_precision(y, score),
        "auc_roc": metrics.auc_roc(y, score),
        "recall_at_1pct_fpr": metrics.recall_at_fpr(y, score, 0.01),
        "cp_at_100": cp_at_100(test, schema, score),
    }


class Runner:
    """Trains and scores the arms in a work directory: one blanked file per (fraction,
    seed), one encoder per pretrained family."""

    def __init__(self, dataset: Dataset, work: Path, args) -> None:
        self.dataset, self.work, self.args = dataset, work, args
        self.schema = dataset.schema
        self.test = dataset.test()
        self.encoders: dict[str, Path | str] = {}  # family -> directory, or why it failed
        self.pretraining: dict[str, dict] = {}
        self.files: dict[tuple[float, int], tuple[Path, dict]] = {}

    def common(self) -> list[str]:
        a = self.args
        quick = [*QUICK_PARAMS, *QUICK_NETWORK] if a.quick else []
        return ["--schema", self.dataset.schema_file, "--epochs", a.epochs, *quick]

    def blanked(self, fraction: float, seed: int) -> tuple[Path, dict]:
        """The data with `fraction` of the training accounts' labels, as Parquet, and how
        many accounts, labels and frauds of the emptied period were kept."""
        if (fraction, seed) not in self.files:
            d = self.dataset
            frame, kept = blank_labels(d.frame, self.schema, fraction, until=d.blank_until,
                                       seed=seed)  # fmt: skip
            labels = frame[self.schema.label].to_numpy()
            labels = labels[(frame[self.schema.time] < d.blank_until).to_numpy()]
            path = self.work / f"data-{fraction:g}-{seed}.parquet"
            write_table(frame, path)
            self.files[(fraction, seed)] = (
                path,
                {
                    "kept_entities": len(kept),
                    "kept_labels": int((~np.isnan(labels)).sum()),
                    "kept_frauds": int(np.nansum(labels)),
                },
            )
        return self.files[(fraction, seed)]

    def encoder(self, family: str) -> Path:
        """The encoder of `family`, pretrained once on the transactions before the test
        period with every label emptied."""
        if family not in self.encoders:
            d = self.dataset
            data = self.work / "pretrain.parquet"
            if not data.exists():
                times = d.frame[self.schema.time]
                frame = d.frame[(times < parse_time(d.test_from)).to_numpy()]
                write_table(frame.assign(**{self.schema.label: np.nan}), data)
            out = self.work / f"encoder-{family}"
            options = ["--epochs", self.args.pretrain_epochs] if self.args.pretrain_epochs else []
            options += QUICK_NETWORK if self.args.quick else []
            print(f"pretraining {family} on the transactions before {d.test_from}...", flush=True)
            try:
                seconds = fraudseq(
                    "pretrain",
                    data,
                    "--schema",
                    d.schema_file,
                    "--out",
                    out,
                    "--until",
                    d.test_from,
                    "--model",
                    family,
                    *options,
                    "--seed",
                    self.args.seeds[0],
                    log=self.work / f"pretrain-{family}.log",
                )
                self.encoders[family] = out
                self.pretraining[family] = {
                    "seconds": seconds,
                    "epochs": self.args.pretrain_epochs or "fraudseq pretrain's default",
                    "load_average": load_average(),
                }
                print(f"  pretrained {family} in {seconds:.0f}s", flush=True)
            except RuntimeError as error:
                self.encoders[family] = str(error)
                self.pretraining[family] = {"error": str(error)}
                print(f"  pretraining {family} failed: {error}", flush=True)
        encoder = self.encoders[family]
        if isinstance(encoder, str):
            raise RuntimeError(f"no {family} encoder: {encoder}")
        return encoder

    def run(self, name: str, fraction: float, seed: int) -> dict:
        """Train arm `name` on `fraction` of the labels with `seed`, score the test period;
        a failure is recorded with its message, never raised."""
        arm, d = ARMS[name], self.dataset
        row = {"arm": name, "fraction": fraction, "seed": seed}
        tag = f"{name}-{fraction:g}-{seed}"
        try:
            data, kept = self.blanked(fraction, seed)
            row.update(kept)
            model_dir, scores = self.work / f"model-{tag}", self.work / f"scores-{tag}.parquet"
            family = ["--model", arm.model] if arm.model else []  # none: the default model
            init = ["--init", self.encoder(arm.init)] if arm.pretrained else []
            init += ["--features", ",".join(arm.features)] if arm.features else []
            row["train_seconds"] = fraudseq(
                "train",
                data,
                "--out",
                model_dir,
                *family,
                *init,
                *self.common(),
                "--train-until",
                d.train_until,
                "--valid-days",
                d.valid_days,
                "--seed",
                seed,
                log=self.work / f"train-{tag}.log",
            )
            row["load_average"] = load_average()
            until = ["--until", d.test_until] if d.test_until else []
            row["score_seconds"] = fraudseq(
                "score",
                model_dir,
                data,
                "--out",
                scores,
                "--from",
                d.test_from,
                *until,
                log=self.work / f"score-{tag}.log",
            )
            scored = pd.read_parquet(scores).set_index("transaction_id")["score"]
            row.update(
                held_out_metrics(
                    self.test, self.schema, scored.reindex(self.test[self.schema.id]).to_numpy()
                )
            )
        except RuntimeError as error:
            row["error"] = str(error)
        return row


def summarise(runs: list[dict]) -> dict:
    """Per arm and fraction: the mean and (population) std over seeds of each metric, over
    the runs that finished, and how many did."""
    out: dict = {}
    done = pd.DataFrame([r for r in runs if "error" not in r])
    if done.empty:
        return out
    keys = ["average_precision", "auc_roc", "recall_at_1pct_fpr", "cp_at_100"]
    for (arm, fraction), group in done.groupby(["arm", "fraction"]):
        out.setdefault(arm, {})[f"{fraction:g}"] = {
            "runs": len(group),
            **{k: float(group[k].mean()) for k in keys},
            **{f"{k}_std": float(group[k].std(ddof=0)) for k in keys},
        }
    return out


def goals(summary: dict) -> dict:
    """The issue's three goals on the mean AP: each with its numbers and met (True/False),
    or None when an arm it needs did not run."""

    def ap(arm: str, fraction: float) -> float | None:
        return summary.get(arm, {}).get(f"{fraction:g}", {}).get("average_precision")

    def best(arms, fraction: float) -> tuple[str, float] | None:
        found = [(a, ap(a, fraction)) for a in arms if ap(a, fraction) is not None]
        return max(found, key=lambda x: x[1]) if found else None

    pretrained = [a for a, arm in ARMS.items() if arm.pretrained and not arm.full_only]
    at_10, full = best(pretrained, GOAL_FRACTION), best(ARMS, 1.0)
    xgboost_10 = ap("xgboost", GOAL_FRACTION)
    default, with_pretrained = ap("ensemble", 1.0), ap("ensemble-pretrained", 1.0)
    out = {
        "best_pretrained_at_10pct": {
            "goal": f"AP >= {GOAL_SHARE:.0%} of the best AP with every label",
            "best_pretrained": at_10,
            "best_with_every_label": full,
            "met": None if not (at_10 and full) else bool(at_10[1] >= GOAL_SHARE * full[1]),
        },
        "pretrained_beats_xgboost_at_10pct": {
            "goal": f"best pretrained AP - XGBoost AP >= {GOAL_MARGIN}",
            "best_pretrained": at_10,
            "xgboost": xgboost_10,
            "met": None
            if at_10 is None or xgboost_10 is None
            else bool(at_10[1] - xgboost_10 >= GOAL_MARGIN),
        },
        "ensemble_with_pretrained_at_100pct": {
            "goal": "AP of the ensemble with a pretrained member >= the default ensemble's",
            "default": default,
            "with_pretrained": with_pretrained,
            "met": None
            if default is None or with_pretrained is None
            else bool(with_pretrained >= default),
        },
    }
    return out


def goal_lines(found: dict) -> list[str]:
    lines = []
    for name, g in found.items():
        verdict = {True: "MET", False: "NOT met", None: "not evaluated (arm missing)"}[g["met"]]
        numbers = ", ".join(
            f"{k} {v[0]} {v[1]:.4f}" if isinstance(v, list | tuple) else f"{k} {v:.4f}"
            for k, v in g.items()
            if k not in ("goal", "met") and v is not None
        )
        lines.append(f"- {name} ({g['goal']}): {verdict}; {numbers}")
    return lines


def report(results: dict) -> str:
    """The AP table (mean ± std over seeds, per arm and fraction), the other metrics, the
    pretraining and the goals."""
    summary, fractions, seeds = results["summary"], results["fractions"], len(results["seeds"])

    def cell(arm: str, f: float, key: str) -> str:
        s = summary.get(arm, {}).get(f"{f:g}")
        if s is None:
            return "—"
        return f"{s[key]:.3f}" + (f" ± {s[key + '_std']:.3f}" if seeds > 1 else "")

    arms = [a for a in ARMS if a in summary]
    ap = table(
        ["Arm", *(f"{f:.0%} labels" for f in fractions)],
        [[a, *(cell(a, f, "average_precision") for f in fractions)] for a in arms],
    )
    rows = [
        [a, f"{f:.0%}", *(cell(a, f, k) for k in ("auc_roc", "recall_at_1pct_fpr", "cp_at_100"))]
        for a in arms
        for f in fractions
        if f"{f:g}" in summary.get(a, {})
    ]
    other = table(["Arm", "Labels", "AUC ROC", "Recall @ 1% FPR", "CP@100"], rows)
    failed = [
        f"- {r['arm']} at {r['fraction']:.0%}, seed {r['seed']}: {r['error']}"
        for r in results["runs"]
        if "error" in r
    ]
    parts = [f"Test AP ({results['dataset']}):", ap, other, "Goals:", *goal_lines(results["goals"])]
    if failed:
        parts += ["Runs that failed:", *failed]
    return "\n\n".join(parts[:3]) + "\n\n" + "\n".join(parts[3:])


def plot(results: dict, path: Path) -> None:
    """AP against the label fraction (log x axis): a line per arm, the 100%-only arms as
    points, a dashed line at the best AP with every label; written atomically."""
    from fraudseq.report.charts import DPI, _figure

    summary = results["summary"]
    fig, (ax,) = _figure(6.4, 4.2)
    for name, arm in ARMS.items():
        points = sorted(
            (float(f), s["average_precision"]) for f, s in summary.get(name, {}).items()
        )
        if not points:
            continue
        x, y = zip(*points, strict=True)
        style = "--" if arm.pretrained else (":" if arm.features else "-")
        marker = ("D" if arm.pretrained else "s") if arm.full_only else "o"
        ax.plot(x, y, style, color=COLOURS[arm.model], marker=marker, label=name)
    full = results["goals"]["best_pretrained_at_10pct"]["best_with_every_label"]
    if full is not None:
        ax.axhline(
            full[1],
            color="black",
            linestyle="--",
            linewidth=0.8,
            label=f"best with every label ({full[0]}, {full[1]:.3f})",
        )
    ax.set_xscale("log")
    fractions = results["fractions"]
    ax.set_xticks(fractions, [f"{f:.0%}" for f in fractions])
    ax.minorticks_off()
    ax.set_xlabel("training labels kept (share of accounts)")
    ax.set_ylabel("test average precision")
    ax.set_title(f"Label efficiency on the {results['dataset']} data")
    ax.legend(fontsize=7, loc="lower right")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, facecolor="white")
    print("plot:", path)


def numbers(text: str, kind=float) -> list:
    return [kind(x) for x in text.split(",") if x.strip()]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="simulator", choices=("simulator", "handbook"))
    parser.add_argument("--data", help="the handbook's file (default ../shared/data/...)")
    parser.add_argument("--fractions", default=",".join(f"{f:g}" for f in FRACTIONS))
    parser.add_argument("--arms", default=",".join(ARMS), help=f"among {', '.join(ARMS)}")
    parser.add_argument("--seeds", default="0", help="comma-separated: label draw and model seed")
    parser.add_argument("--epochs", type=int, default=10, help="training epochs (at most)")
    parser.add_argument("--pretrain-epochs", type=int, help="default: fraudseq pretrain's")
    parser.add_argument("--quick", action="store_true", help="tiny data and models: a smoke run")
    parser.add_argument("--out", help="results JSON (default benchmarks/results/...)")
    parser.add_argument("--plot", help="PNG (default docs/img/label_efficiency-DATASET.png)")
    parser.add_argument("--markdown", action="store_true", help="print the tables from --out")
    args = parser.parse_args(argv)
    args.fractions, args.seeds = numbers(args.fractions), numbers(args.seeds, int)
    args.arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = [a for a in args.arms if a not in ARMS]
    if unknown or not args.arms:
        parser.error(f"unknown arm(s) {unknown}: choose among {', '.join(ARMS)}")
    if not args.fractions or any(not 0 < f <= 1 for f in args.fractions):
        parser.error("--fractions: shares in (0, 1], e.g. 0.01,0.1,1")
    if args.quick and not args.pretrain_epochs:
        args.pretrain_epochs = 1
    stem = f"label_efficiency-{args.dataset}" + ("-quick" if args.quick else "")
    args.out = Path(args.out or RESULTS / f"{stem}.json")
    args.plot = Path(args.plot or IMAGES / f"{stem}.png")
    return args


def settings(args, dataset: Dataset) -> dict:
    """What a run's numbers depend on; runs of other arms merge only under equal settings."""
    return {
        "dataset": dataset.name,
        "quick": args.quick,
        "epochs": args.epochs,
        "pretrain_epochs": args.pretrain_epochs,
        "train_until": dataset.train_until,
        "valid_days": dataset.valid_days,
        "labels_emptied_before": str(dataset.blank_until),
        "test": [dataset.test_from, dataset.test_until],
        "n_rows": int(len(dataset.frame)),
    }


def same_settings(previous: dict | None, current: dict) -> bool:
    """Whether runs made under `previous` settings can stand beside runs under `current`:
    everything but the pretraining epochs (recorded with each encoder) must be equal."""

    def runs_depend_on(settings: dict) -> dict:
        return {k: v for k, v in settings.items() if k != "pretrain_epochs"}

    return previous is not None and runs_depend_on(previous) == runs_depend_on(current)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.markdown:
        if not args.out.exists():
            raise SystemExit(f"{args.out} does not exist: run without --markdown first")
        print(report(json.loads(args.out.read_text())))
        return
    started, clock = datetime.now(UTC).isoformat(timespec="seconds"), time.perf_counter()
    load_start, machine = load_average(), describe()
    print("machine:", machine, "; load average:", load_start, flush=True)
    dataset = load_dataset(args.dataset, args.quick, args.data)
    current = settings(args, dataset)
    runs = []
    with tempfile.TemporaryDirectory(prefix="label_efficiency-") as tmp:
        runner = Runner(dataset, Path(tmp), args)
        n_test, n_fraud = len(runner.test), int(runner.test[dataset.schema.label].sum())
        print(
            f"{args.dataset}: {len(dataset.frame):,} rows; labels emptied before "
            f"{dataset.blank_until}; test {n_test:,} transactions, {n_fraud} frauds",
            flush=True,
        )
        for fraction in args.fractions:
            for seed in args.seeds:
                for name in args.arms:
                    if ARMS[name].full_only and fraction != 1:
                        continue
                    row = runner.run(name, fraction, seed)
                    runs.append({**row, "machine": machine})  # runs of several merge
                    said = row.get("error") or (
                        f"AP {row['average_precision']:.4f} AUC {row['auc_roc']:.4f}, "
                        f"train {row['train_seconds']:.0f}s (load {row['load_average']})"
                    )
                    kept = (
                        f"{row.get('kept_entities')} accounts, {row.get('kept_frauds')} frauds kept"
                    )
                    print(f"{name} {fraction:.0%} seed {seed} ({kept}): {said}", flush=True)
        pretraining = runner.pretraining
    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    if same_settings(previous.get("settings"), current):
        ran = {(r["arm"], r["fraction"], r["seed"]) for r in runs}
        kept = [r for r in previous["runs"] if (r["arm"], r["fraction"], r["seed"]) not in ran]
        print(f"kept {len(kept)} runs of {args.out.name} (same settings, other arms)")
        runs = kept + runs
        pretraining = {**previous.get("pretraining", {}), **pretraining}
    elif previous:
        print(f"replacing {args.out.name}: its runs had other settings")
    fractions = sorted({r["fraction"] for r in runs})
    summary = summarise(runs)
    results = {
        "dataset": args.dataset,
        "settings": current,
        "fractions": fractions,
        "seeds": sorted({r["seed"] for r in runs}),
        "n_test": n_test,
        "n_fraud": n_fraud,
        "pretraining": pretraining,
        "runs": runs,
        "summary": summary,
        "goals": goals(summary),
        "started": started,
        "seconds": time.perf_counter() - clock,  # this run's wall time (not merged runs')
        "load_average": {"start": load_start, "end": load_average()},
        "machine": machine,
    }
    save_results(args.out.stem, results, args.out)
    plot(results, args.plot)
    print()
    print(report(results))


if __name__ == "__main__":
    main()
