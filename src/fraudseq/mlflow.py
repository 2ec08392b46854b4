"""MLflow: a fraudseq model directory logged as an MLflow model with a pyfunc flavor, and
MLflow model URIs (``models:/NAME/VERSION``, ``models:/NAME@ALIAS``, ``runs:/RUN/PATH``)
resolved back to a model directory. Needs the ``mlflow`` extra (``pip install
'fraudseq[mlflow]'``; mlflow-skinny is enough).

    >>> import mlflow, fraudseq.mlflow                                    # doctest: +SKIP
    >>> fraudseq.mlflow.log_model("model", registered_model_name="fraud") # doctest: +SKIP
    >>> scorer = mlflow.pyfunc.load_model("models:/fraud/1")              # doctest: +SKIP
    >>> scorer.predict(transactions)   # transaction_id, score, alert     # doctest: +SKIP

What MLflow stores:

- the artifact ``fraudseq_model``: the model directory's own files, the ones its manifest
  lists plus the manifest (and signature.json when there is one), copied and verified
  before logging; loading verifies them again exactly as `FraudModel.load` does (SHA-256
  manifest, HMAC signature under FRAUDSEQ_MODEL_KEY), so nothing is unpickled;
- the pyfunc wrapper as code, not as a pickle: MLflow's "models from code" stores
  ``fraudseq/mlflow_model_code.py``, a few lines that build a `FraudseqPyfunc`, and runs
  them when the model is loaded (fraudseq must be installed there).

`predict` takes a DataFrame of transactions in the model's schema, history included (as
``fraudseq score`` does), and returns ``transaction_id``, ``score`` and ``alert`` in time
order. ``params={"from": ..., "until": ...}`` scores only that period, earlier rows being
history.

Inside this module ``import mlflow`` is the MLflow package: imports are absolute.
"""

from __future__ import annotations

import atexit
import logging
import shutil
import tempfile
import warnings
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models.signature import ModelSignature
from mlflow.pyfunc import PythonModel
from mlflow.types import ParamSchema, ParamSpec

import fraudseq
from fraudseq.artifacts import MANIFEST, MODEL_JSON, SIGNATURE, model_manifest, verify_model_dir
from fraudseq.choices import MODEL_URI_SCHEMES
from fraudseq.errors import FraudseqError, ModelDirectoryError
from fraudseq.fraud_model import FraudModel
from fraudseq.redaction import redact

log = logging.getLogger("fraudseq")

#: The name of the model directory among the MLflow model's artifacts.
ARTIFACT = "fraudseq_model"
#: The file MLflow stores and runs to build the pyfunc wrapper (models from code).
CODE_FILE = Path(__file__).with_name("mlflow_model_code.py")
#: predict's optional parameters: the period scored, as `fraudseq score --from/--until`.
SIGNATURE_PARAMS = ParamSchema([ParamSpec("from", "string", ""), ParamSpec("until", "string", "")])


class FraudseqPyfunc(PythonModel):
    """The pyfunc flavor of a fraudseq model: `predict` is `FraudModel.score`."""

    def load_context(self, context) -> None:
        path = (context.artifacts or {}).get(ARTIFACT)
        if path is None:
            raise ModelDirectoryError(
                f"this MLflow model has no {ARTIFACT!r} artifact, so no fraudseq model "
                "directory: log fraudseq models with fraudseq.mlflow.log_model"
            )
        self.model = FraudModel.load(path)  # verified against its manifest (and signature)

    def predict(
        self, context, model_input: pd.DataFrame, params: dict | None = None
    ) -> pd.DataFrame:
        params = params or {}
        return self.model.score(
            model_input, start=params.get("from") or None, end=params.get("until") or None
        )


def log_model(
    model_dir: str | Path,
    name: str = "model",
    registered_model_name: str | None = None,
    **kwargs,
):
    """Log the fraudseq model directory `model_dir` as an MLflow model called `name` (in the
    active run, if any) with a pyfunc flavor; with `registered_model_name`, also register it
    as a new version of that model. Other keyword arguments go to
    `mlflow.pyfunc.log_model` (e.g. ``pip_requirements``, ``tags``). Returns MLflow's
    ModelInfo (``model_uri``, ``registered_model_version``, ...).

    The directory is verified first (a damaged or unsigned model is refused as
    `FraudModel.load` refuses it), and only its own files are logged."""
    model_dir = Path(model_dir)
    model = FraudModel.load(model_dir)  # verified, and a complete model description
    with tempfile.TemporaryDirectory(prefix="fraudseq-mlflow-") as tmp:
        staged = Path(tmp) / ARTIFACT
        staged.mkdir()
        files = verify_model_dir(model_dir)
        names = [*files, MANIFEST, *([SIGNATURE] if (model_dir / SIGNATURE).is_file() else [])]
        for file in names:
            shutil.copyfile(model_dir / file, staged / file)
        verify_model_dir(staged)  # the bytes logged are bytes checked
        kwargs.setdefault("pip_requirements", requirements())
        kwargs.setdefault("signature", ModelSignature(inputs=None, params=SIGNATURE_PARAMS))
        metadata = {
            "fraudseq": {
                "family": model.model,
                "model_version": files[MODEL_JSON][:12],
                "fraudseq_version": fraudseq.__version__,
            },
            **kwargs.pop("metadata", {}),
        }
        with warnings.catch_warnings():
            # transactions need their history: one row is no useful example
            warnings.filterwarnings("ignore", message=".*An input example was not provided")
            return mlflow.pyfunc.log_model(
                name=name,
                python_model=str(CODE_FILE),
                artifacts={ARTIFACT: str(staged)},
                registered_model_name=registered_model_name,
                metadata=metadata,
                **kwargs,
            )


def requirements() -> list[str]:
    """The pip requirements recorded with a logged model: this fraudseq (which brings the
    libraries it needs). Given rather than inferred: MLflow's inference loads the model in a
    subprocess."""
    return [f"fraudseq=={fraudseq.__version__}"]


def is_model_uri(source: str | Path) -> bool:
    """Whether `source` is an MLflow URI that `resolve_model_uri` downloads."""
    return str(source).startswith(MODEL_URI_SCHEMES)


def resolve_model_uri(uri: str, dst: str | Path | None = None) -> Path:
    """Download the MLflow model `uri` (``models:/NAME/VERSION``, ``models:/NAME@ALIAS``,
    ``runs:/RUN_ID/PATH``) from the tracking server or store that MLFLOW_TRACKING_URI (and
    MLFLOW_REGISTRY_URI) name, and return the fraudseq model directory inside it, still to be
    loaded (and verified) as usual.

    Downloads into `dst`, or a temporary directory removed when the process exits. Raises
    FraudseqError naming the URI and what is missing when it does not resolve, is not an
    MLflow model, or holds no fraudseq model directory."""
    where = f"tracking URI {redact(str(mlflow.get_tracking_uri()))}"
    if dst is None:
        dst = tempfile.mkdtemp(prefix="fraudseq-model-")
        atexit.register(shutil.rmtree, dst, ignore_errors=True)
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst)))
    except MlflowException as exc:
        raise FraudseqError(
            f"{uri} does not resolve ({where}): {redact(exc.message)}. Check the name, version "
            "or alias (set MLFLOW_TRACKING_URI to the server or store the model is in)"
        ) from None
    except OSError as exc:
        raise FraudseqError(f"{uri}: cannot download it ({where}): {exc}") from None
    if not (local / "MLmodel").is_file():
        raise FraudseqError(
            f"{uri} ({where}) is not an MLflow model: it has no MLmodel file, so no fraudseq "
            "files; give the URI of a model logged with fraudseq.mlflow.log_model"
        )
    try:
        flavor = mlflow.models.Model.load(str(local / "MLmodel")).flavors.get("python_function", {})
        relative = flavor.get("artifacts", {}).get(ARTIFACT, {}).get("path")
    except (MlflowException, OSError, ValueError, AttributeError) as exc:
        raise FraudseqError(f"{uri} ({where}): unreadable MLmodel file ({exc})") from None
    if not isinstance(relative, str):
        raise FraudseqError(
            f"{uri} ({where}) is an MLflow model without fraudseq's files: its pyfunc flavor "
            f"has no {ARTIFACT!r} artifact (a fraudseq model directory); log fraudseq models "
            "with fraudseq.mlflow.log_model"
        )
    path = (local / relative).resolve()
    if not path.is_relative_to(local.resolve()):  # MLmodel is data: never a path out
        raise FraudseqError(f"{uri} ({where}): its {ARTIFACT!r} artifact points outside it")
    if model_manifest(path) is None:
        raise FraudseqError(
            f"{uri} ({where}): its {ARTIFACT!r} artifact is not a fraudseq model directory "
            f"({MANIFEST} missing or not fraudseq's); log the model again with "
            "fraudseq.mlflow.log_model"
        )
    log.info("model %s downloaded to %s", uri, path)
    return path
