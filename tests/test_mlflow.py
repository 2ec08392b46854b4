"""fraudseq.mlflow against real MLflow (a local file store): log a model directory as a
pyfunc model, register it, load it by version and alias, predict; models:/ URIs in the
command line (score, serve); and the errors for URIs that do not resolve or hold no fraudseq
model."""

from __future__ import annotations

import json

import pandas as pd
import pytest

mlflow = pytest.importorskip("mlflow")

from fraudseq.artifacts import MANIFEST, MODEL_JSON  # noqa: E402
from fraudseq.errors import FraudseqError  # noqa: E402
from test_cli import run  # noqa: E402
from test_state import TRAIN_UNTIL  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NAME = "fraud-lstm"
TRIVIAL_MODEL = """
import mlflow


class Echo(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input


mlflow.models.set_model(Echo())
"""


@pytest.fixture(scope="module")
def tracking(tmp_path_factory):
    """A local file-store tracking URI (registry included) for the module. MLflow 3 keeps
    the file store in maintenance mode behind MLFLOW_ALLOW_FILE_STORE."""
    uri = (tmp_path_factory.mktemp("mlflow") / "mlruns").as_uri()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
        patch.setenv("MLFLOW_TRACKING_URI", uri)  # for the command line, in this process
        mlflow.set_tracking_uri(uri)
        yield uri
        mlflow.set_tracking_uri(None)


@pytest.fixture(scope="module")
def registered(tracking, tiny_lstm_dir):
    """tiny_lstm_dir logged and registered as version 1 of NAME, alias "champion"."""
    import fraudseq.mlflow

    with mlflow.start_run():
        info = fraudseq.mlflow.log_model(tiny_lstm_dir, registered_model_name=NAME)
    assert str(info.registered_model_version) == "1"
    mlflow.MlflowClient().set_registered_model_alias(NAME, "champion", "1")
    return info


@pytest.fixture(scope="module")
def cli_scores(tiny_lstm_dir, small_csv, tmp_path_factory):
    """`fraudseq score` of the model directory over the small file, from TRAIN_UNTIL."""
    out = tmp_path_factory.mktemp("scores") / "scores.csv"
    with pytest.MonkeyPatch.context() as patch:
        code = run(patch, "score", tiny_lstm_dir, small_csv, "--out", out, "--from", TRAIN_UNTIL)
    assert code in (0, None)
    return pd.read_csv(out)


def assert_same_scores(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert list(got.columns) == ["transaction_id", "score", "alert"]
    assert got["transaction_id"].astype(str).tolist() == expected["transaction_id"].tolist()
    assert (got["score"] - expected["score"]).abs().max() <= 1e-6
    assert got["alert"].astype(int).tolist() == expected["alert"].tolist()


def test_pyfunc_predict_gives_fraudseq_scores(registered, small_csv, cli_scores):
    scorer = mlflow.pyfunc.load_model(f"models:/{NAME}/1")
    transactions = pd.read_csv(small_csv)  # history included, as `score` reads it
    got = scorer.predict(transactions, params={"from": TRAIN_UNTIL})
    assert_same_scores(got, cli_scores)
    # without a period every transaction is scored; those of the period the same
    everything = scorer.predict(transactions)
    assert len(everything) == len(transactions)
    tail = everything.set_index("transaction_id").loc[cli_scores["transaction_id"]]
    assert (tail["score"].to_numpy() - cli_scores["score"].to_numpy()).max() <= 1e-6


def test_an_alias_loads_the_same_model(registered, small_csv, cli_scores):
    scorer = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    got = scorer.predict(pd.read_csv(small_csv), params={"from": TRAIN_UNTIL})
    assert_same_scores(got, cli_scores)


def test_the_logged_files_are_the_model_directory_and_no_pickle(registered, tiny_lstm_dir):
    import fraudseq.mlflow
    from fraudseq.mlflow import ARTIFACT, resolve_model_uri

    assert fraudseq.mlflow.mlflow is mlflow  # `import mlflow` in fraudseq/mlflow.py is MLflow

    path = resolve_model_uri(f"models:/{NAME}/1")
    assert path.name == ARTIFACT
    assert sorted(p.name for p in path.iterdir()) == sorted(p.name for p in tiny_lstm_dir.iterdir())
    for file in path.iterdir():
        assert file.read_bytes() == (tiny_lstm_dir / file.name).read_bytes()
    logged = path.parent.parent
    assert not list(logged.rglob("*.pkl")) and not list(logged.rglob("*.pickle"))
    assert (logged / "mlflow_model_code.py").is_file()  # the wrapper is stored as code
    flavor = mlflow.models.Model.load(str(logged / "MLmodel")).flavors["python_function"]
    assert flavor["loader_module"] == "mlflow.pyfunc.loaders.code_model"


def test_score_and_evaluate_accept_a_models_uri(registered, small_csv, cli_scores, tmp_path):
    out = tmp_path / "scores.csv"
    with pytest.MonkeyPatch.context() as patch:
        args = ("score", f"models:/{NAME}@champion", small_csv, "--out", out)
        assert run(patch, *args, "--from", TRAIN_UNTIL) in (0, None)
        metrics = tmp_path / "metrics.json"
        uri = f"models:/{NAME}/1"
        assert run(patch, "evaluate", uri, small_csv, "--from", TRAIN_UNTIL, "--json", metrics) in (
            0,
            None,
        )
    assert_same_scores(pd.read_csv(out), cli_scores)
    assert json.loads(metrics.read_text())["n"] == len(cli_scores)


def test_serve_loads_a_models_uri(registered, tiny_lstm_dir, small_frame, monkeypatch, capsys):
    """`fraudseq serve models:/NAME@ALIAS` builds the app on the downloaded directory; the
    app is run here with TestClient instead of uvicorn."""
    import uvicorn
    from fastapi.testclient import TestClient

    from test_state import transactions

    replies = []

    def serve_here(app, **options):
        with TestClient(app) as client:
            requests, _ = transactions(small_frame.head(3))
            replies.extend(client.post("/v1/score", json=tx) for tx in requests)

    monkeypatch.setattr(uvicorn, "run", serve_here)
    code = run(monkeypatch, "serve", f"models:/{NAME}@champion", "--clock", "2026-01-02")
    assert code in (0, None)
    assert [r.status_code for r in replies] == [200] * 3, replies[0].text
    manifest = json.loads((tiny_lstm_dir / MANIFEST).read_text())
    assert replies[0].json()["model_version"] == manifest["files"][MODEL_JSON][:12]
    assert f"from models:/{NAME}@champion" in capsys.readouterr().err  # named by its URI


def test_report_names_the_model_by_its_uri(registered, small_csv, tmp_path, monkeypatch):
    out = tmp_path / "report.html"
    args = ("report", f"models:/{NAME}/1", small_csv, "--from", TRAIN_UNTIL, "--out", out)
    assert run(monkeypatch, *args, "--top", 1, "--resamples", 10) in (0, None)
    text = out.read_text(encoding="utf-8")
    assert f"models:/{NAME}/1" in text and "fraudseq-model-" not in text


def test_export_accepts_a_models_uri(registered, tmp_path, monkeypatch):
    out = tmp_path / "onnx"
    assert run(monkeypatch, "export", f"models:/{NAME}/1", "--out", out) in (0, None)
    assert json.loads((out / "inputs.json").read_text())["source"] == f"models:/{NAME}/1"


def test_resolved_directory_loads_in_a_detector(registered, tiny_lstm_dir):
    from fraudseq.mlflow import resolve_model_uri
    from fraudseq.serving import Detector

    detector = Detector.load(resolve_model_uri(f"models:/{NAME}/1"))
    try:
        reference = Detector.load(tiny_lstm_dir)
        assert detector.model_version == reference.model_version
        reference.close()
    finally:
        detector.close()


@pytest.mark.parametrize("uri", [f"models:/{NAME}/7", f"models:/{NAME}@nobody", "models:/nope/1"])
def test_a_uri_that_does_not_resolve_is_named(registered, uri, monkeypatch, capsys):
    from fraudseq.mlflow import resolve_model_uri

    with pytest.raises(FraudseqError, match="does not resolve") as error:
        resolve_model_uri(uri)
    assert uri in str(error.value)
    assert run(monkeypatch, "serve", uri) == 1
    err = capsys.readouterr().err
    assert uri in err and "does not resolve" in err


def test_a_run_or_model_without_fraudseq_files_is_refused(tracking, tmp_path, monkeypatch, capsys):
    from fraudseq.mlflow import resolve_model_uri

    # a run whose "model" folder is not an MLflow model
    with mlflow.start_run() as plain:
        mlflow.log_text("hello", "model/notes.txt")
    with pytest.raises(FraudseqError, match="not an MLflow model") as error:
        resolve_model_uri(f"runs:/{plain.info.run_id}/model")
    assert plain.info.run_id in str(error.value)
    # an MLflow model that is not a fraudseq model (a pyfunc of its own, as code)
    code = tmp_path / "echo.py"
    code.write_text(TRIVIAL_MODEL)
    with mlflow.start_run():
        mlflow.pyfunc.log_model(
            name="echo", python_model=str(code), registered_model_name="echo", pip_requirements=[]
        )
    with pytest.raises(FraudseqError, match="without fraudseq's files"):
        resolve_model_uri("models:/echo/1")
    assert run(monkeypatch, "score", "models:/echo/1", tmp_path / "x.csv", "--out", "s.csv") == 1
    assert "without fraudseq's files" in capsys.readouterr().err


def test_threshold_refuses_a_models_uri(monkeypatch, capsys, small_csv):
    args = ("threshold", f"models:/{NAME}/1", small_csv, "--strategy", "best-f1")
    assert run(monkeypatch, *args) == 1
    assert "cannot be changed in place" in capsys.readouterr().err


def test_a_changed_logged_file_is_refused_on_load(tracking, tiny_lstm_dir, tmp_path):
    import fraudseq.mlflow

    with mlflow.start_run():
        info = fraudseq.mlflow.log_model(tiny_lstm_dir, name="tampered")
    local = mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(tmp_path / "m"))
    model_json = tmp_path / "m" / "artifacts" / "fraudseq_model" / MODEL_JSON
    model_json.write_text(model_json.read_text().replace('"lstm"', '"gru"', 1))
    with pytest.raises(Exception, match="SHA-256 does not match"):
        mlflow.pyfunc.load_model(local)


def test_log_model_refuses_a_damaged_directory(tracking, tiny_lstm_dir, tmp_path):
    import shutil

    import fraudseq.mlflow

    broken = tmp_path / "model"
    shutil.copytree(tiny_lstm_dir, broken)
    (broken / MODEL_JSON).write_text("{}")
    with pytest.raises(FraudseqError, match="SHA-256"):
        fraudseq.mlflow.log_model(broken)
