"""FraudModel: schema + feature encoder + windowed network + threshold, with a
scikit-learn-like API (fit / score / evaluate / save / load)."""

from __future__ import annotations

import inspect
import logging
import math
import platform
from collections.abc import Callable
from numbers import Integral, Real
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch

import fraudseq
from fraudseq import metrics
from fraudseq.artifacts import load_model_dir, save_model_dir
from fraudseq.choices import UNSUPERVISED
from fraudseq.drift import training_reference
from fraudseq.errors import ConfigError, FraudseqError, ModelDirectoryError
from fraudseq.features import EncodedFrame, FeatureEncoder
from fraudseq.features.blocks import BLOCKS as FEATURE_BLOCKS
from fraudseq.losses import make_loss
from fraudseq.models import build_model, check_family, learns_from_fraud
from fraudseq.models.ensemble import COMBINERS, parse_members
from fraudseq.models.transformer import gap_scaling
from fraudseq.sampling import check_sampling
from fraudseq.schema import UNKNOWN_LABELS, Schema, load_transactions
from fraudseq.splits import in_period, parse_time, validation_start
from fraudseq.thresholds import choose, needs_fraud, parse_strategy
from fraudseq.training import WindowSet, WindowSource

log = logging.getLogger("fraudseq")

FORMAT_VERSION = 1
# Stored beside the chosen threshold so `evaluate` can show the trade-off.
REPORTED_STRATEGIES = ("best-f1", "recall:0.8", "precision:0.8")
#: The blocks a model uses unless told; those a schema lacks add nothing. new_values_24h is
#: opt-in until a benchmark shows what it adds.
DEFAULT_FEATURES = (
    "event", "recency", "amount_history", "novelty", "velocity", "counterparty_risk",
)  # fmt: skip
# Built from (delayed) fraud labels: left out of the unsupervised families' defaults, so
# that it needs no labels at all (and it ranks better without them on the simulator).
LABEL_BLOCKS = ("counterparty_risk", "exposure")


def default_features(model: str) -> tuple[str, ...]:
    """The feature blocks of `model` when `features` is not given."""
    if model in UNSUPERVISED:
        return tuple(b for b in DEFAULT_FEATURES if b not in LABEL_BLOCKS)
    return DEFAULT_FEATURES


class FraudModel:
    """A sequence fraud classifier over per-entity windows of the last `window` events.

    The default family is the ensemble of an LSTM and XGBoost (`members`), weighted on
    validation AP: the best configuration on the handbook benchmark (see docs/results.md).

    >>> model = FraudModel("lstm", epochs=3, seed=0)             # doctest: +SKIP
    >>> model.fit("tx.csv", schema, train_until="2026-02-15")    # doctest: +SKIP
    >>> model.score("tx.csv", start="2026-02-15")                # doctest: +SKIP

    `init` is a pretrained encoder directory (`fraudseq pretrain`, `fraudseq.pretraining`):
    `fit` then starts the lstm, gru or transformer network's encoder from its weights and
    uses its fitted feature encoder (features, scalers, vocabularies); the family, the
    architecture (window, hidden_size, num_layers, transformer_layers, transformer_heads)
    and the schema's columns must be the encoder's, which `FraudModel.from_encoder` takes.
    """

    def __init__(
        self,
        model: str = "ensemble",
        *,
        window: int = 16,
        features: tuple[str, ...] | None = None,
        hidden_size: int = 32,
        num_layers: int = 1,
        dropout: float = 0.1,
        epochs: int = 10,
        batch_size: int = 512,
        learning_rate: float = 1e-3,
        weight_decay: float = 0.0,
        patience: int = 3,
        class_weight: str | float = "auto",
        loss: str = "bce",
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        oversample: float | None = None,
        fraud_ratio: float | None = None,
        threshold: str | None = None,
        n_estimators: int = 600,
        max_depth: int = 6,
        bidirectional: bool = False,
        attention_heads: int = 4,
        transformer_layers: int = 2,
        transformer_heads: int = 2,
        members: tuple[str, ...] = ("lstm", "xgboost"),
        combiner: str = "average",
        novelty_ap_loss: float = 0.0,
        min_count: int = 5,
        max_vocabulary: int = 300,
        label_delay_days: float = 7,
        seed: int = 0,
        progress: bool | None = None,
        init: str | Path | None = None,
    ) -> None:
        self.model = model
        self.window = window
        self.features = features
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.dropout = dropout
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.patience = patience
        self.class_weight = class_weight
        self.loss = loss
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.oversample = oversample
        self.fraud_ratio = fraud_ratio
        self.threshold = threshold
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.bidirectional = bidirectional
        self.attention_heads = attention_heads
        self.transformer_layers = transformer_layers
        self.transformer_heads = transformer_heads
        self.members = members
        self.combiner = combiner
        self.novelty_ap_loss = novelty_ap_loss
        self.min_count = min_count
        self.max_vocabulary = max_vocabulary
        self.label_delay_days = label_delay_days
        self.seed = seed
        self.progress = progress
        self.init = init

    # -- training ------------------------------------------------------------------------
    def fit(
        self,
        data,
        schema: Schema | None = None,
        *,
        train_from=None,
        train_until=None,
        valid_days: float = 7,
        valid_period: tuple | None = None,
        work_dir: str | Path | None = None,
        shards: int | None = None,
        engine: str = "local",
        ray_address: str | None = None,
        ray_workers: int = 2,
    ) -> FraudModel:
        """Train on labelled transactions with time in [train_from, train_until).

        Validation is the last `valid_days` of that period, or the explicit half-open
        `valid_period=(from, until)`. Earlier transactions serve as history only; later ones
        are dropped before anything is computed. The encoder is fitted on training-period
        rows only, never on validation rows. A row whose label is empty (not known) is
        history, as any transaction, but never a training or validation target; in the
        counterparty features it is not a known fraud.

        With `work_dir`, `data` (a file) is streamed through `shards` shards by entity
        written there, in memory bounded by a shard (`fraudseq.engine.training`).
        `engine="ray"` streams it so too (through a temporary directory without
        `work_dir`), with the feature passes as Ray tasks and a torch family trained on
        `ray_workers` Ray Train workers (`fraudseq.engine.ray_train`), on the cluster at
        `ray_address` or a local Ray instance started and stopped with the call.
        """
        self._check_params()
        schema = schema or Schema.simulator()
        self._pretrained = self._pretrained_encoder(schema)
        if self._pretrained is not None and (work_dir is not None or engine != "local"):
            raise FraudseqError(
                "init (--init) fine-tunes in memory: it does not take work_dir (--work-dir) or "
                "engine='ray' (--engine ray) yet"
            )
        if work_dir is not None or engine != "local":
            from fraudseq.engine.training import fit_sharded

            if not isinstance(data, str | Path):
                raise FraudseqError(
                    "work_dir (and engine='ray') stream a file through shards: give the path "
                    f"of a CSV or Parquet file, not a {type(data).__name__} (already in "
                    "memory: fit without them)"
                )

            return fit_sharded(
                self,
                data,
                schema,
                work_dir,
                shards=shards,
                train_from=train_from,
                train_until=train_until,
                valid_days=valid_days,
                valid_period=valid_period,
                engine=engine,
                ray_address=ray_address,
                ray_workers=ray_workers,
            )
        frame = load_transactions(data, schema, require_label=UNKNOWN_LABELS)
        until = parse_time(train_until, "--train-until") or frame[schema.time].max() + _ONE_NS
        train_rows, valid_rows, end, in_valid = self._periods(
            frame[schema.time],
            frame[schema.label].to_numpy(),
            train_from,
            until,
            valid_days,
            valid_period,
        )
        keep = (frame[schema.time] < end).to_numpy()
        frame, train_rows, valid_rows, in_valid = (
            frame[keep].reset_index(drop=True),
            train_rows[keep],
            valid_rows[keep],
            in_valid[keep],
        )
        self.schema_ = schema
        # every row of the period, labelled or not, but none of the validation period
        fit_rows = (frame[schema.time] < until).to_numpy() & ~in_valid
        if self._pretrained is None:
            self.encoder_ = self._new_encoder().fit(frame[fit_rows])
        else:  # the encoder's features, scalers and vocabularies, with any blocks added
            self.encoder_ = self._pretrained.features_for(self._new_encoder(), frame[fit_rows])
        source = WindowSource(self.encoder_.transform(frame), self.window)
        labels = frame[schema.label].to_numpy()
        train = _window_set(source, train_rows, labels)
        valid = _window_set(source, valid_rows, labels)
        self._fit_windows(train, valid)
        # without validation (--valid-days 0) the threshold can only be chosen in-sample
        self._calibrate(
            frame,
            valid_rows if len(valid) else train_rows,
            source,
            period=calibration_period(len(valid)),
        )
        self._set_training_period(
            train_from, until, frame[schema.time][valid_rows], len(train), len(valid)
        )
        self.pretrained_ = (
            None
            if self._pretrained is None
            else {"encoder": str(self.init), **self._pretrained.info["pretraining"]}
        )
        del self._pretrained
        return self

    def _pretrained_encoder(self, schema: Schema):
        """The pretrained encoder `init` names, checked against this model and `schema`
        (a `fraudseq.pretraining.PretrainedEncoder`), or None without `init`."""
        if self.init is None:
            return None
        from fraudseq.pretraining import PretrainedEncoder

        pretrained = PretrainedEncoder.load(self.init)
        pretrained.check_fits(self, schema)
        return pretrained

    @classmethod
    def from_encoder(cls, path: str | Path, model: str | None = None, **params) -> FraudModel:
        """A model to fine-tune from the pretrained encoder directory at `path`: of the
        encoder's family (unless `model`), with its architecture and feature blocks unless
        `params` give them (a different value then stops `fit` with an error naming it),
        and `params` (epochs, learning_rate, loss, threshold...) as given. The feature
        blocks are the encoder's and the label blocks the family uses by default
        (`counterparty_risk`), which pretraining never has: they are fitted on the training
        rows and their input weights start at zero (`PretrainedEncoder.fill`).

        >>> FraudModel.from_encoder("encoder", epochs=5).fit("tx.csv")  # doctest: +SKIP
        """
        from fraudseq.pretraining import ARCHITECTURE, PretrainedEncoder

        pretrained = PretrainedEncoder.load(path)
        taken = {name: pretrained.model.get_params()[name] for name in ARCHITECTURE}
        blocks = tuple(pretrained.feature_encoder.blocks)
        family = model or pretrained.family
        added = tuple(b for b in default_features(family) if b in LABEL_BLOCKS and b not in blocks)
        taken["features"] = blocks + added  # the label blocks pretraining never has
        if params.get("features") is None:  # not given (the CLI passes None)
            params.pop("features", None)
        return cls(family, **{**taken, **params, "init": path})

    def _periods(
        self, times: pd.Series, labels: np.ndarray, train_from, until, valid_days, valid_period
    ):
        """`_split` of these times and labels, with what this model's family and threshold
        strategy need of the periods."""
        return _split(
            times,
            train_from,
            until,
            valid_days,
            valid_period,
            labels=labels,
            train_needs_fraud=learns_from_fraud(self.model, self.members),
            valid_needs_fraud=needs_fraud(self.threshold_strategy()),
        )

    def _new_encoder(self) -> FeatureEncoder:
        return FeatureEncoder(
            self.schema_,
            blocks=self.features if self.features is not None else default_features(self.model),
            min_count=self.min_count,
            max_vocabulary=self.max_vocabulary,
            label_delay_days=self.label_delay_days,
        )

    def _fit_windows(self, train, valid) -> None:
        """Build the window model and train it on these windows (in memory or on disk)."""
        self._new_window_model(train, valid).fit(train, valid if len(valid) else None)
        self.history_ = self.model_.history_

    def _new_window_model(self, train, valid):
        """The window model for these windows, built (`model_`) and not yet trained."""
        log.info(
            "training %s on %d windows (%d fraud), validating on %d (%d fraud)",
            self.model,
            len(train),
            int(train.labels.sum()),
            len(valid),
            int(valid.labels.sum()),
        )
        torch.manual_seed(self.seed)
        self.model_ = self._build()
        pretrained = getattr(self, "_pretrained", None)
        if pretrained is not None:  # the network, or an ensemble's members of its family
            members = getattr(self.model_, "members", [(self.model, self.model_)])
            for name, member in members:
                if name == pretrained.family:
                    pretrained.fill(member.network, self.encoder_.numeric_names_)
                    log.info("the %s encoder starts from %s", name, self.init)
        return self.model_

    def _set_training_period(self, train_from, until, valid_times: pd.Series, n_train, n_valid):
        self.training_period_ = {
            "train_from": str(parse_time(train_from)) if train_from is not None else None,
            "valid_from": str(valid_times.min()) if len(valid_times) else None,
            "valid_end": str(valid_times.max() + _ONE_NS) if len(valid_times) else None,
            "train_until": str(until),
            "n_train": n_train,
            "n_valid": n_valid,
        }

    def threshold_strategy(self) -> str:
        """The threshold strategy: as given, else the family's default."""
        if self.threshold is not None:
            return self.threshold
        return "percentile:99" if self.model in UNSUPERVISED else "best-f1"

    def _calibrate(
        self,
        frame: pd.DataFrame,
        rows: np.ndarray,
        source: WindowSource,
        period: str = "validation",
    ) -> None:
        """Choose the threshold (and the reported alternatives) on these labelled rows, which
        `period` names in the reason of a strategy that alerts on nothing."""
        s = self.schema_
        windows = _window_set(source, rows, frame[s.label].to_numpy())
        probability = _sigmoid(self.model_.decision_function(windows))
        amount = frame[s.amount].to_numpy()[rows]
        encoded = source.encoded
        features = encoded.numeric[windows.positions], encoded.categorical[windows.positions]
        self._choose_thresholds(
            windows.labels, probability, amount, frame[s.time][rows], period, features
        )

    def _choose_thresholds(
        self,
        labels: np.ndarray,
        probability: np.ndarray,
        amount: np.ndarray,
        times: pd.Series,
        period: str,
        features: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        """`_calibrate` from the labels, probabilities, amounts and times of its rows, and
        their encoded (numeric, categorical) `features` for the stored drift reference."""
        days = _period_days(times)
        strategies = dict.fromkeys([self.threshold_strategy(), *REPORTED_STRATEGIES])
        choices = {
            strategy: choose(strategy, labels, probability, amount=amount, days=days, period=period)
            for strategy in strategies
        }
        self.thresholds_ = {strategy: c.threshold for strategy, c in choices.items()}
        self.threshold_ = self.thresholds_[self.threshold_strategy()]
        self.validation_metrics_ = metrics.summary(labels, probability, self.threshold_)
        self.validation_metrics_["days"] = days  # its length, as budget:K counts days
        # what `fraudseq monitor` and the service's drift gauges compare scores with
        self.reference_ = training_reference(probability, self.threshold_, self.encoder_, features)
        # why each strategy whose threshold is +inf alerts on nothing
        self.unreachable_ = {
            strategy: c.reason for strategy, c in choices.items() if c.threshold == math.inf
        }

    def rethreshold(self, data, strategy: str, *, start=None, end=None) -> FraudModel:
        """Choose a new threshold by `strategy` on labelled data in [start, end) without
        retraining; by default on the validation period stored in the model."""
        self._check_fitted()
        period = self.training_period_
        # where the threshold is chosen, for the reason of a strategy that alerts on nothing
        on = f"[{_text(start) or 'the start'}, {_text(end) or 'the end'})"
        if start is None and end is None and period.get("valid_from") is not None:
            on = "validation"
        start = start if start is not None else period.get("valid_from")
        end = end if end is not None else period.get("valid_end")
        frame, rows = self._period(data, start, end, require_label=UNKNOWN_LABELS)
        rows = rows[known_labels(frame[self.schema_.label].to_numpy()[rows])]
        if len(rows) == 0:
            raise FraudseqError(
                f"no labelled transactions in [{start}, {end}) to choose a threshold on (every "
                "label there is empty: not known); choose a period with known labels "
                "(--from/--until)"
            )
        if needs_fraud(strategy) and not frame[self.schema_.label].to_numpy()[rows].any():
            raise FraudseqError(
                f"no fraud in [{start}, {end}) to choose a {strategy!r} threshold on (it would "
                "fall back to 0.5); choose a period with fraud (--from/--until) or a "
                "percentile:/budget: strategy, which need no labels"
            )
        source = WindowSource(self.encoder_.transform(frame), self.window)
        mask = np.zeros(len(frame), dtype=bool)
        mask[rows] = True
        self.threshold = strategy
        self._calibrate(frame, mask, source, on)
        return self

    def _check_params(self) -> None:
        """Raise ConfigError for an invalid family or hyperparameter, before any data is read
        (a typo should not wait for loading, or surface as a library's error mid-training)."""
        check_family(self.model, self.members)
        for name, rule in PARAM_RULES.items():
            value = getattr(self, name)
            if not rule.ok(value):
                raise ConfigError(f"invalid {name}={value!r}: expected {rule.expected}")
        # The rules of these live with the code that uses them.
        if self.threshold is not None:
            parse_strategy(self.threshold, "threshold")
        check_sampling(self.oversample, self.fraud_ratio)
        try:
            make_loss(self.loss, None, self.focal_alpha, self.focal_gamma)
        except ValueError as exc:
            raise ConfigError(f"invalid loss={self.loss!r}: {exc}") from None

    def _build(self):
        return build_model(*self.build_args())

    def build_args(self) -> tuple:
        """`build_model`'s arguments for this fitted encoder: what a Ray Train worker builds
        the same window model from (`engine.ray_train`). The parameters hold `gap` too:
        where the transformer reads the gaps between a window's events (`gap_scaling`), and
        `fields`: the column layout the surprise family's targets are fitted from."""
        encoder = self.encoder_
        fields = {
            "numeric": list(encoder.numeric_names_),
            "categorical": list(encoder.schema.categorical),
        }
        params = {**self.get_params(), "gap": gap_scaling(encoder), "fields": fields}
        return (self.model, encoder.n_numeric, encoder.cardinalities, params, self.seed)

    # -- scoring -------------------------------------------------------------------------
    def score(self, data, *, start=None, end=None) -> pd.DataFrame:
        """Score transactions with time in [start, end), using earlier ones as history.

        Returns `transaction_id, score, alert` in time order; `score` is the fraud
        probability and `alert` applies the model's threshold.
        """
        frame, scored = self._scored(data, start, end, require_label=False)
        return pd.DataFrame(
            {
                "transaction_id": frame[self.schema_.id_column].to_numpy()[scored.rows],
                "score": scored.probability,
                "alert": (scored.probability >= self.threshold_).astype(np.int8),
            }
        )

    def evaluate(self, data, *, start=None, end=None) -> dict:
        """Metrics on labelled transactions with time in [start, end)."""
        frame, scored = self._scored(data, start, end, require_label=True)
        labels = frame[self.schema_.label].to_numpy()[scored.rows]
        return self.evaluation(labels, scored.probability, start, end)

    def evaluation(self, labels: np.ndarray, probability: np.ndarray, start, end) -> dict:
        """The metrics `evaluate` reports, of scored transactions of [start, end)."""
        result = metrics.summary(labels, probability, self.threshold_)
        result["strategy"] = self.threshold_strategy()
        result["at_thresholds"] = {
            strategy: {
                "threshold": value,
                "alerts": int(np.sum(probability >= value)),
                **metrics.precision_recall_f1(metrics.confusion(labels, probability, value)),
            }
            for strategy, value in self.thresholds_.items()
        }
        result["period"] = {"from": _text(start), "until": _text(end)}
        return result

    def _period(self, data, start, end, *, require_label: bool):
        """The loaded frame up to `end` (earlier rows are history) and the rows in the period."""
        schema = self.schema_
        frame = load_transactions(data, schema, require_label=require_label)
        if end is not None:
            frame = frame[(frame[schema.time] < parse_time(end, "--until")).to_numpy()]
            frame = frame.reset_index(drop=True)
        rows = np.flatnonzero(in_period(frame[schema.time], start, None))
        if len(rows) == 0:
            raise no_transactions(start, end)
        return frame, rows

    def _scored(self, data, start, end, *, require_label: bool):
        self._check_fitted()
        frame, rows = self._period(data, start, end, require_label=require_label)
        return frame, _Scored(rows, self.probabilities(frame, rows))

    def probabilities(
        self, frame: pd.DataFrame, rows: np.ndarray, given: dict | None = None
    ) -> np.ndarray:
        """Fraud probabilities of the rows `rows` of a loaded `frame` (its earlier rows are
        their history); `given` as in `FeatureEncoder.transform`."""
        self._check_fitted()
        return self.encoded_probabilities(self.encoder_.transform(frame, given), rows)

    def encoded_probabilities(self, encoded: EncodedFrame, rows: np.ndarray) -> np.ndarray:
        """`probabilities` from the frame already encoded by this model's encoder."""
        source = WindowSource(encoded, self.window)
        windows = WindowSet(source, source.positions_of(rows))
        return _sigmoid(self.model_.decision_function(windows))

    # -- persistence ---------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the model directory atomically: model.json, weights.safetensors, manifest."""
        self._check_fitted()
        config = {
            "format_version": FORMAT_VERSION,
            "model": self.model,
            "params": self._stored_params(),
            "schema": self.schema_.to_document(),
            "encoder": self.encoder_.to_json(),
            "threshold": {
                "value": self.threshold_,
                "strategy": self.threshold_strategy(),
                "all": self.thresholds_,
                "unreachable": self.unreachable_,
            },
            "validation_metrics": self.validation_metrics_,
            "history": self.history_,
            "training_period": self.training_period_,
            "reference": getattr(self, "reference_", None),
            "versions": versions(),
        }
        if getattr(self, "pretrained_", None):  # the encoder it started from (--init)
            config["pretrained"] = self.pretrained_
        tensors, files = self.model_.state()
        return save_model_dir(path, config, tensors, files)

    @classmethod
    def load(cls, path: str | Path) -> FraudModel:
        """Load a model directory after checking every file against its manifest (and its
        signature when FRAUDSEQ_MODEL_KEY is set; see fraudseq.artifacts)."""
        config, tensors, files = load_model_dir(path)
        if config.get("format_version") != FORMAT_VERSION:
            raise FraudseqError(
                f"{path}: model format {config.get('format_version')} is not supported by this "
                f"fraudseq ({FORMAT_VERSION}); retrain the model"
            )
        try:
            return cls._from_config(path, config, tensors, files)
        except FraudseqError:
            raise
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            # model.json matched its manifest but is not what save writes
            raise ModelDirectoryError(
                f"{path}/model.json: not a complete fraudseq model description "
                f"({type(exc).__name__}: {exc}); retrain or restore the model directory"
            ) from None

    @classmethod
    def _from_config(cls, path, config: dict, tensors: dict, files: dict) -> FraudModel:
        model = cls.from_params(config["model"], config["params"])
        model.schema_ = Schema.from_document(config["schema"], source=f"{path}/model.json")
        model.encoder_ = FeatureEncoder.from_json(config["encoder"], model.schema_)
        model.model_ = model._build()
        model.model_.load_state(tensors, files)
        model.threshold_ = _threshold(config["threshold"]["value"])
        model.thresholds_ = {k: _threshold(v) for k, v in config["threshold"]["all"].items()}
        model.unreachable_ = config["threshold"].get("unreachable", {})  # {} before it was kept
        model.validation_metrics_ = _non_finite(config["validation_metrics"])
        model.history_ = _non_finite(config["history"])
        model.training_period_ = config["training_period"]
        model.reference_ = config.get("reference")  # None: saved before it was kept
        model.pretrained_ = config.get("pretrained")  # the encoder it started from, if any
        return model

    @classmethod
    def from_params(cls, model: str, params: dict) -> FraudModel:
        """An unfitted model of family `model` from `get_params()` output or model.json's
        "params" (JSON lists back to tuples). `params` may hold "model" or not (directories
        written before it was a parameter do not); the `model` argument wins."""
        params = {**params, "model": model}
        for name in ("features", "members"):
            if params.get(name) is not None:
                params[name] = tuple(params[name])
        return cls(**params)

    @classmethod
    def _param_names(cls) -> list[str]:
        return [name for name in inspect.signature(cls.__init__).parameters if name != "self"]

    def get_params(self, deep: bool = True) -> dict:
        """Every `__init__` argument by name, as stored (scikit-learn's convention, so
        `sklearn.base.clone` works). `deep` is accepted for that convention; a FraudModel
        holds no nested estimators, so it changes nothing."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params) -> FraudModel:
        """Set `__init__` arguments by name and return self (scikit-learn's convention); they
        are checked by the next `fit`. Unknown names raise ConfigError."""
        unknown = sorted(set(params) - set(self._param_names()))
        if unknown:
            raise ConfigError(
                f"FraudModel has no parameter {', '.join(unknown)}; "
                f"valid: {', '.join(self._param_names())}"
            )
        for name, value in params.items():
            setattr(self, name, value)
        return self

    def _stored_params(self) -> dict:
        """The hyperparameters as written to model.json: JSON lists, members parsed, and
        without `progress`, a display choice of the run rather than of the model."""
        params = self.get_params()
        del params["progress"]
        if params["features"] is not None:
            params["features"] = list(params["features"])
        if params["init"] is not None:
            params["init"] = str(params["init"])
        params["members"] = list(parse_members(params["members"]))
        return params

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise FraudseqError("this FraudModel is not fitted; call fit() or FraudModel.load()")


class _Rule(NamedTuple):
    ok: Callable[[object], bool]
    expected: str


#: Largest seed: torch.manual_seed takes a signed 64-bit integer.
SEED_MAX = 2**63 - 1


def _integer(low: int, high: float = math.inf) -> _Rule:
    expected = f"an integer >= {low}" if high == math.inf else f"an integer in [{low}, {high}]"
    return _Rule(lambda v: isinstance(v, Integral) and low <= v <= high, expected)


def _number(low: float, high: float = math.inf, *, low_open=False, high_open=True) -> _Rule:
    def ok(v) -> bool:
        if not isinstance(v, Real):  # before comparing: "0.1" < 1 raises TypeError
            return False
        above = low < v if low_open else low <= v
        below = v < high if high_open else v <= high
        return above and below

    interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    return _Rule(ok, f"a number in {interval}")


def _features(value) -> bool:
    return value is None or (not isinstance(value, str) and set(value) <= set(FEATURE_BLOCKS))


def _class_weight(value) -> bool:
    return value in ("auto", "none", None) or _number(0, low_open=True).ok(value)


# What `fit` accepts for each hyperparameter with a fixed rule (the others: _check_params).
PARAM_RULES = {
    "window": _integer(1),
    "features": _Rule(_features, f"None or feature blocks among {', '.join(FEATURE_BLOCKS)}"),
    "hidden_size": _integer(1),
    "num_layers": _integer(1),
    "dropout": _number(0, 1),
    "epochs": _integer(1),
    "batch_size": _integer(1),
    "learning_rate": _number(0, low_open=True),
    "weight_decay": _number(0),
    "patience": _integer(0),
    "class_weight": _Rule(_class_weight, "'auto', 'none' or a number > 0"),
    "focal_alpha": _number(0, 1, high_open=False),
    "focal_gamma": _number(0),
    "n_estimators": _integer(1),
    "max_depth": _integer(1),
    "attention_heads": _integer(1),
    "transformer_layers": _integer(1),
    "transformer_heads": _integer(1),
    "combiner": _Rule(lambda v: v in COMBINERS, f"one of {', '.join(COMBINERS)}"),
    "novelty_ap_loss": _number(0, 1),
    "min_count": _integer(0),
    "max_vocabulary": _integer(1),
    "label_delay_days": _number(0),
    "seed": _integer(0, SEED_MAX),
    "init": _Rule(lambda v: v is None or isinstance(v, str | Path), "None or a directory path"),
}

_ONE_NS = pd.Timedelta(1, "ns")


def _period_days(times: pd.Series) -> float:
    """The length in days of the period `times` cover, counted in whole hours begun: 7 whole
    days of data are 7, 18:00 to 06:00 is 0.5 (calendar dates touched would say 2)."""
    if times.empty:
        return 0.0
    hours = np.ceil((times.max() - times.min()) / pd.Timedelta(hours=1))
    return max(float(hours), 1.0) / 24


def _split(
    times: pd.Series,
    train_from,
    until,
    valid_days,
    valid_period,
    *,
    labels: np.ndarray,
    train_needs_fraud: bool,
    valid_needs_fraud: bool,
):
    """Masks of the training and validation targets (the rows of each period whose label is
    known: an empty label, NaN, is history only), the end of the data that fitting may
    see, and the mask of every row of the validation period (which the encoder never fits
    on, labelled or not). Raise when a period cannot do its job: training needs labelled
    transactions, and fraud too for a model that learns from labels; validation may be
    empty only when asked for (`valid_days=0`), and needs fraud for a threshold strategy
    that does."""
    if valid_period is not None:
        valid_from, valid_until = (parse_time(v, "validation period") for v in valid_period)
        valid_rows = in_period(times, valid_from, valid_until)
        train_rows = in_period(times, train_from, until) & ~valid_rows
        end = max(until, valid_until)
        fix = "choose another validation period"
    else:
        valid_from, valid_until = validation_start(until, valid_days), until
        train_rows = in_period(times, train_from, valid_from)
        valid_rows = in_period(times, _later(train_from, valid_from), until)
        end = until
        fix = "choose another --train-until or more --valid-days (0 trains without validation)"
    training = f"[{_text(train_from) or times.min()}, {until}) outside the validation period"
    if train_rows.sum() == 0:
        raise FraudseqError(
            f"no training transactions in {training} starting {valid_from}; choose a later "
            "--train-until or fewer --valid-days"
        )
    known = known_labels(labels)
    if not known[train_rows].any():
        raise FraudseqError(
            f"no labelled transactions in the training period {training} "
            f"[{valid_from}, {valid_until}): all {int(train_rows.sum()):,} labels there are "
            "empty (not known), and a row without a label is history only, never a target; "
            "fill in the labels or choose a period whose labels are known (--train-from / "
            "--train-until)"
        )
    unknown = int((~known & (train_rows | valid_rows)).sum())
    in_valid = valid_rows
    train_rows, valid_rows = train_rows & known, valid_rows & known
    if unknown:
        log.info(
            "%d transaction(s) of the training and validation periods have no label: "
            "history only, never targets",
            unknown,
        )
    if train_needs_fraud and not labels[train_rows].any():
        # XGBoost would learn a constant score (every transaction alerts), a network noise.
        raise FraudseqError(
            f"no fraud in the training period {training} [{valid_from}, {valid_until}) "
            f"({data_range(times, labels)}), so the model has no fraud to learn from; choose "
            "an earlier --train-from or a later --train-until (only the autoencoder and the "
            "surprise model train without fraud)"
        )
    if valid_period is None and valid_days == 0:
        log.warning(
            "--valid-days 0: no validation, so no early stopping on it; the threshold and the "
            "metrics reported are chosen and measured on the training period (in-sample)"
        )
    elif not valid_rows.any() or (valid_needs_fraud and not labels[valid_rows].any()):
        found = "fraud" if valid_rows.any() else "transactions"
        if in_valid.any() and not valid_rows.any():
            found = "labelled transactions (every label there is empty: not known)"
        raise FraudseqError(
            f"no {found} in the validation period [{valid_from}, {valid_until}) "
            f"({data_range(times, labels)}), so the threshold and validation metrics would "
            f"come from training data; {fix}"
        )
    return train_rows, valid_rows, end, in_valid


def known_labels(labels: np.ndarray) -> np.ndarray:
    """True where a label is known (0 or 1); an empty label, NaN, is not known."""
    return ~np.isnan(np.asarray(labels, dtype=np.float64))


def calibration_period(n_valid: int) -> str:
    """Where the threshold is chosen: validation, or in-sample without it."""
    return "validation" if n_valid else "the training data (no validation)"


def no_transactions(start, end, options: str = "--from/--until") -> FraudseqError:
    return FraudseqError(f"no transactions in [{_text(start)}, {_text(end)}); check {options}")


def data_range(times: pd.Series, labels: np.ndarray) -> str:
    """Where the data and its fraud are, for an error about an empty period."""
    fraud = times[labels == 1]
    found = f"its first fraud at {fraud.min()}" if len(fraud) else "no fraud at all"
    return f"the data runs from {times.min()} to {times.max()}, {found}"


class _Scored:
    def __init__(self, rows: np.ndarray, probability: np.ndarray) -> None:
        self.rows, self.probability = rows, probability


def _window_set(source: WindowSource, rows_mask: np.ndarray, labels: np.ndarray) -> WindowSet:
    rows = np.flatnonzero(rows_mask)
    return WindowSet(source, source.positions_of(rows), labels[rows].astype(np.float32))


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-logits.astype(np.float64)))).astype(np.float64)


def _later(a, b):
    return b if a is None else max(parse_time(a), parse_time(b))


def _threshold(value) -> float:
    """A threshold read from model.json, where null stands for +inf: alerts on nothing."""
    return math.inf if value is None else float(value)


def _non_finite(stored, key: str | None = None):
    """Stored metrics with model.json's nulls read back: a threshold as +inf, any other
    number as NaN (undefined, e.g. AUC without fraud)."""
    if stored is None:
        return _threshold(None) if key == "threshold" else math.nan
    if isinstance(stored, dict):
        return {k: _non_finite(v, k) for k, v in stored.items()}
    if isinstance(stored, list):
        return [_non_finite(v, key) for v in stored]
    return stored


def _text(value) -> str | None:
    return None if value is None else str(parse_time(value))


def versions() -> dict[str, str]:
    import safetensors
    import sklearn

    return {
        "fraudseq": fraudseq.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "scikit-learn": sklearn.__version__,
        "safetensors": safetensors.__version__,
        "python": platform.python_version(),
    }
