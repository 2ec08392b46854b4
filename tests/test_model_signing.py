"""What the manifest protects, what FRAUDSEQ_MODEL_KEY adds, and model directories that
point out of themselves (issue 17, item 6)."""

import hashlib
import json
import sys

import pytest
import torch

from fraudseq.artifacts import load_model_dir, save_model_dir
from fraudseq.cli import main
from fraudseq.errors import ModelDirectoryError
from fraudseq.fraud_model import FraudModel

KEY = "FRAUDSEQ_MODEL_KEY"


@pytest.fixture(autouse=True)
def _no_model_key(monkeypatch):
    monkeypatch.delenv(KEY, raising=False)


def save(path, value=1.0):
    return save_model_dir(path, {"value": value}, {"w": torch.full((3,), value)})


def forge(path, text: str) -> None:
    """Replace model.json by `text` and recompute the manifest, as a deliberate edit would."""
    (path / "model.json").write_text(text)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["files"]["model.json"] = hashlib.sha256(text.encode()).hexdigest()
    (path / "manifest.json").write_text(json.dumps(manifest))


def test_without_a_key_the_manifest_catches_accidents_only(tmp_path):
    """Documented: a deliberate edit with a recomputed manifest loads without a key."""
    save(tmp_path / "m")
    forge(tmp_path / "m", '{"value": 2.0}')
    assert load_model_dir(tmp_path / "m")[0] == {"value": 2.0}


def test_a_signed_model_loads_with_its_key_and_without_one(tmp_path, monkeypatch):
    monkeypatch.setenv(KEY, "s3cret")
    save(tmp_path / "m")
    assert (tmp_path / "m" / "signature.json").is_file()
    assert load_model_dir(tmp_path / "m")[0] == {"value": 1.0}
    monkeypatch.delenv(KEY)
    assert load_model_dir(tmp_path / "m")[0] == {"value": 1.0}


def test_with_a_key_a_forged_manifest_is_refused(tmp_path, monkeypatch, trained):
    monkeypatch.setenv(KEY, "s3cret")
    trained.save(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "model.json").read_text())
    config["threshold"]["value"] = 0.999999
    forge(tmp_path / "m", json.dumps(config))
    with pytest.raises(ModelDirectoryError, match="signature does not match"):
        FraudModel.load(tmp_path / "m")


def test_with_a_key_an_unsigned_or_otherwise_signed_model_is_refused(tmp_path, monkeypatch):
    save(tmp_path / "unsigned")
    monkeypatch.setenv(KEY, "s3cret")
    with pytest.raises(ModelDirectoryError, match=f"not signed.*{KEY}"):
        load_model_dir(tmp_path / "unsigned")
    monkeypatch.setenv(KEY, "other key")
    save(tmp_path / "other")
    monkeypatch.setenv(KEY, "s3cret")
    with pytest.raises(ModelDirectoryError, match="signature does not match"):
        load_model_dir(tmp_path / "other")
    (tmp_path / "other" / "signature.json").write_text("{oops")
    with pytest.raises(ModelDirectoryError, match="signature"):
        load_model_dir(tmp_path / "other")


def test_an_empty_key_is_an_error_not_no_key(tmp_path, monkeypatch):
    """An empty secret (a variable set from a missing one) must not turn checking off."""
    save(tmp_path / "m")
    monkeypatch.setenv(KEY, "")
    with pytest.raises(ModelDirectoryError, match=f"{KEY} is set but empty"):
        load_model_dir(tmp_path / "m")
    with pytest.raises(ModelDirectoryError, match=f"{KEY} is set but empty"):
        save(tmp_path / "n")


def test_cli_refuses_a_forged_model_with_one_error_line(tmp_path, monkeypatch, capsys, trained):
    monkeypatch.setenv(KEY, "s3cret")
    trained.save(tmp_path / "m")
    forge(tmp_path / "m", (tmp_path / "m" / "model.json").read_text().replace("0.", "0.9", 1))
    monkeypatch.setattr(sys, "argv", ["fraudseq", "evaluate", str(tmp_path / "m"), "x.csv"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and err.startswith("error: ") and "signature" in err


def test_serving_loads_through_the_same_checks(tmp_path, monkeypatch, trained):
    from fraudseq.serving import Detector

    monkeypatch.setenv(KEY, "s3cret")
    trained.save(tmp_path / "m")
    Detector.load(tmp_path / "m").close()
    forge(tmp_path / "m", (tmp_path / "m" / "model.json").read_text() + " ")
    with pytest.raises(ModelDirectoryError, match="signature does not match"):
        Detector.load(tmp_path / "m")


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", "\xff"])
def test_invalid_model_json_matching_its_manifest_is_a_clear_error(tmp_path, text):
    save(tmp_path / "m")
    forge(tmp_path / "m", text)
    with pytest.raises(ModelDirectoryError, match="model.json"):
        load_model_dir(tmp_path / "m")


def test_a_model_json_without_the_model_s_fields_is_a_clear_error(tmp_path, trained):
    trained.save(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "model.json").read_text())
    del config["encoder"]
    forge(tmp_path / "m", json.dumps(config))
    with pytest.raises(ModelDirectoryError, match="model.json"):
        FraudModel.load(tmp_path / "m")


def test_symlinked_files_out_of_the_directory_are_refused(tmp_path):
    save(tmp_path / "m")
    outside = tmp_path / "outside.json"
    (tmp_path / "m" / "model.json").rename(outside)
    (tmp_path / "m" / "model.json").symlink_to(outside)  # its digest still matches
    with pytest.raises(ModelDirectoryError, match="symbolic link.*outside"):
        load_model_dir(tmp_path / "m")


def test_symlinked_directories_out_of_the_directory_are_refused(tmp_path):
    save(tmp_path / "m")
    (tmp_path / "secrets").mkdir()
    (tmp_path / "m" / ".cache").symlink_to(tmp_path / "secrets")
    with pytest.raises(ModelDirectoryError, match=r"\.cache.*symbolic link"):
        load_model_dir(tmp_path / "m")


def test_the_model_directory_itself_may_be_a_link(tmp_path):
    """`current -> model-v3` is a deployment habit; the link names the directory to use."""
    save(tmp_path / "model-v3")
    (tmp_path / "current").symlink_to(tmp_path / "model-v3")
    assert load_model_dir(tmp_path / "current")[0] == {"value": 1.0}
    save(tmp_path / "current", 2.0)  # replaces the directory the link names
    assert (tmp_path / "current").is_symlink()
    assert load_model_dir(tmp_path / "model-v3")[0] == {"value": 2.0}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["current", "model-v3"]


def test_save_never_writes_through_a_link(tmp_path):
    victim = tmp_path / "victim.bin"
    victim.write_bytes(b"precious")
    save(tmp_path / "m")
    (tmp_path / "m" / "weights.safetensors").unlink()
    (tmp_path / "m" / "weights.safetensors").symlink_to(victim)
    with pytest.raises(ModelDirectoryError):
        save(tmp_path / "m", 2.0)
    assert victim.read_bytes() == b"precious"
