"""`make demo`: simulate -> train -> evaluate -> report on the built-in simulator.

The demo adds the simulator's opt-in typologies (`skimmer`, and `new_scheme` starting on
the first held-out day, so that no model has a label for it), which the report's
per-scenario table and "Common points of compromise" section then show. `--scenarios none`
simulates the default data, on which the README's numbers were measured."""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from pathlib import Path

import pandas as pd

from fraudseq.fraud_model import FraudModel
from fraudseq.io import write_json, write_table
from fraudseq.report import write_model_report
from fraudseq.schema import Schema
from fraudseq.simulate import OPT_IN_SCENARIOS, simulate

log = logging.getLogger("fraudseq")


class Heartbeat:
    """A background thread that logs the current stage and the time spent whenever nothing
    was logged for `interval` seconds, so that a log without progress bars (output not a
    terminal) shows the demo is alive, even within a long training epoch. Set `stage` as
    the work moves on; use it as a context manager. Disabled, it does nothing."""

    def __init__(self, interval: float = 10.0, *, enabled: bool = True) -> None:
        self.interval, self.enabled = interval, enabled
        self._started = self._last = time.monotonic()
        self.stage = "starting"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self._clock = _LastRecord(self)

    @property
    def stage(self) -> str:
        return self._stage

    @stage.setter
    def stage(self, value: str) -> None:
        self._stage, self._stage_started = value, time.monotonic()

    def __enter__(self) -> Heartbeat:
        if self.enabled:
            logging.getLogger().addHandler(self._clock)
            self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        if self.enabled:
            self._stop.set()
            self._thread.join()
            logging.getLogger().removeHandler(self._clock)

    def _run(self) -> None:
        while not self._stop.wait(max(self._last + self.interval - time.monotonic(), 0.01)):
            now = time.monotonic()
            if now - self._last >= self.interval:
                self._last = now  # also when logging is not configured to reach the root
                log.info(
                    "... still %s: %.0f s in this stage, %.0f s since the start",
                    self.stage,
                    now - self._stage_started,
                    now - self._started,
                )


class _LastRecord(logging.Handler):
    """Notes when the last log record went out (any logger's), for the heartbeat."""

    def __init__(self, heartbeat: Heartbeat) -> None:
        super().__init__(logging.INFO)
        self.heartbeat = heartbeat

    def emit(self, record: logging.LogRecord) -> None:
        self.heartbeat._last = time.monotonic()


def run(
    out: Path,
    accounts: int,
    days: int,
    test_days: int,
    epochs: int,
    seed: int,
    heartbeat: Heartbeat | None = None,
    scenarios: tuple[str, ...] = OPT_IN_SCENARIOS,
) -> Path:
    """Simulate (with the opt-in `scenarios`), train the default model and a one-event
    baseline before the last `test_days`, evaluate both there and write the report."""
    beat = heartbeat or Heartbeat(enabled=False)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    beat.stage = "simulating transactions"
    start = pd.Timestamp("2026-01-01")
    test_from = (start + pd.Timedelta(days=days - test_days)).date()
    frame = simulate(
        accounts=accounts,
        days=days,
        seed=seed,
        start=str(start.date()),
        scenarios=scenarios,
        new_scheme_start=str(test_from) if "new_scheme" in scenarios else None,
    )
    data = write_table(frame, out / "transactions.csv.gz")
    log.info(
        "simulated %d transactions (%.2f%% fraud%s) -> %s",
        len(frame),
        100 * frame["is_fraud"].mean(),
        f"; with {', '.join(scenarios)}" if scenarios else "",
        data,
    )

    schema = Schema.simulator()
    models = {
        "fraudseq default (ensemble: LSTM + XGBoost)": FraudModel(epochs=epochs, seed=seed),
        "single-event baseline": FraudModel(
            "lstm", window=1, features=("event",), epochs=epochs, seed=seed
        ),
    }
    results = {}
    for name, model in models.items():
        log.info(
            "training %s (train until %s, validation = last 7 days before it)", name, test_from
        )
        beat.stage = f"training {name}"
        model.fit(data, schema, train_until=test_from, valid_days=7)
        beat.stage = f"evaluating {name}"
        results[name] = model.evaluate(data, start=test_from)
        log.info(
            "%s: held-out AP %.4f, AUC ROC %.4f",
            name,
            results[name]["average_precision"],
            results[name]["auc_roc"],
        )
    model = next(iter(models.values()))
    beat.stage = "saving the default model and scoring the held-out period"
    model.save(out / "model")
    write_table(model.score(data, start=test_from), out / "scores.csv")
    write_json(results, out / "metrics.json")
    log.info("writing the HTML report of the default model on the held-out period")
    beat.stage = "writing the HTML report"
    report = write_model_report(
        out / "report.html",
        model,
        data,
        start=test_from,
        model_dir=out / "model",
        title="fraudseq demo: the default model on simulated card transactions",
        comparison=results,
        notes={
            "simulated": f"{len(frame):,} transactions, {accounts} accounts, {days} days",
            "run time before report": f"{time.perf_counter() - started:.0f} s",
        },
    )
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("demo_output"))
    parser.add_argument("--accounts", type=int, default=2000)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--test-days", type=int, default=14)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--scenarios",
        default=",".join(OPT_IN_SCENARIOS),
        help="Opt-in typologies to simulate, comma-separated, or 'none' (the default data).",
    )
    args = parser.parse_args()
    scenarios = tuple(s for s in args.scenarios.split(",") if s and s != "none")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # Progress bars show on a terminal; a log file or CI gets a line at least every 10 s.
    with Heartbeat(enabled=not sys.stderr.isatty()) as heartbeat:
        report = run(
            args.out,
            args.accounts,
            args.days,
            args.test_days,
            args.epochs,
            args.seed,
            heartbeat,
            scenarios=scenarios,
        )
    print(f"\nreport: {report.resolve()}")


if __name__ == "__main__":
    main()
