import json
import math

import pytest
import torch

from fraudseq.artifacts import load_model_dir, save_model_dir
from fraudseq.errors import ModelDirectoryError


def save(path, value=1.0):
    return save_model_dir(path, {"value": value}, {"w": torch.full((3,), value)})


def test_round_trip(tmp_path):
    save(tmp_path / "m")
    config, tensors, _ = load_model_dir(tmp_path / "m")
    assert config == {"value": 1.0}
    assert torch.equal(tensors["w"], torch.ones(3))
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "manifest.json",
        "model.json",
        "weights.safetensors",
    ]
    modes = {p.stat().st_mode & 0o777 for p in (tmp_path / "m").iterdir()}
    assert len(modes) == 1  # the weights are as readable as the rest (umask applied)


def test_tampered_file_is_refused(tmp_path):
    save(tmp_path / "m")
    (tmp_path / "m" / "model.json").write_text(json.dumps({"value": 2.0}))
    with pytest.raises(ModelDirectoryError, match="model.json.*SHA-256"):
        load_model_dir(tmp_path / "m")


def test_truncated_weights_are_refused(tmp_path):
    save(tmp_path / "m")
    weights = tmp_path / "m" / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4])
    with pytest.raises(ModelDirectoryError, match="weights.safetensors"):
        load_model_dir(tmp_path / "m")


def test_missing_file_and_manifest(tmp_path):
    save(tmp_path / "m")
    (tmp_path / "m" / "weights.safetensors").unlink()
    with pytest.raises(ModelDirectoryError, match="missing"):
        load_model_dir(tmp_path / "m")
    (tmp_path / "m" / "manifest.json").unlink()
    with pytest.raises(ModelDirectoryError, match="manifest"):
        load_model_dir(tmp_path / "m")
    with pytest.raises(ModelDirectoryError, match="not a model directory"):
        load_model_dir(tmp_path / "nothing")


def test_replacing_keeps_old_on_failure(tmp_path, monkeypatch):
    save(tmp_path / "m", 1.0)

    def disk_full(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("fraudseq.artifacts.save_file", disk_full)
    with pytest.raises(OSError):
        save(tmp_path / "m", 3.0)
    monkeypatch.undo()
    config, _, _ = load_model_dir(tmp_path / "m")
    assert config["value"] == 1.0
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no staging directories left
    save(tmp_path / "m", 2.0)
    assert load_model_dir(tmp_path / "m")[0]["value"] == 2.0


def test_extra_files_round_trip_and_are_verified(tmp_path):
    save_model_dir(tmp_path / "m", {"a": 1}, None, {"booster.ubj": b"\x00\x01"})
    _, tensors, files = load_model_dir(tmp_path / "m")
    assert tensors == {} and files == {"booster.ubj": b"\x00\x01"}
    (tmp_path / "m" / "booster.ubj").write_bytes(b"\x00\x02")
    with pytest.raises(ModelDirectoryError, match="booster.ubj"):
        load_model_dir(tmp_path / "m")


def test_a_directory_that_is_not_a_model_is_never_replaced(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "tx.csv").write_text("id\n1\n")
    with pytest.raises(ModelDirectoryError, match="not a fraudseq model directory"):
        save(data)
    assert [p.name for p in data.iterdir()] == ["tx.csv"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no staging left
    (data / "tx.csv").unlink()
    save(data)  # an empty directory is fine, and so is replacing a model directory
    save(data, 2.0)
    assert load_model_dir(data)[0]["value"] == 2.0


@pytest.mark.parametrize(
    "manifest",
    ["[1, 2]", '{"files": ["model.json"]}', '{"files": {"model.json": 1}}', '{"other": {}}'],
)
def test_malformed_manifests_are_refused(tmp_path, manifest):
    save(tmp_path / "m")
    (tmp_path / "m" / "manifest.json").write_text(manifest)
    with pytest.raises(ModelDirectoryError, match="unreadable manifest"):
        load_model_dir(tmp_path / "m")


def test_a_file_left_out_of_the_manifest_is_refused(tmp_path):
    save(tmp_path / "m")
    manifest_path = tmp_path / "m" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    del manifest["files"]["weights.safetensors"]
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ModelDirectoryError, match="weights.safetensors not in the manifest"):
        load_model_dir(tmp_path / "m")
    (tmp_path / "m" / "weights.safetensors").unlink()
    (tmp_path / "m" / ".DS_Store").write_bytes(b"")  # the OS's dotfiles are not the model's
    assert load_model_dir(tmp_path / "m")[1] == {}


def strict_json(text: str):
    """Parse `text` as strict JSON: Infinity and NaN, which Python accepts, are refused."""

    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_model_json_is_strict_json(tmp_path):
    """Non-finite numbers are written as null: strict parsers reject Infinity and NaN."""
    save_model_dir(tmp_path / "m", {"threshold": math.inf, "auc": math.nan, "x": (1.5, -math.inf)})
    text = (tmp_path / "m" / "model.json").read_text()
    assert strict_json(text) == {
        "threshold": None,
        "auc": None,
        "x": [1.5, None],
    }
    assert load_model_dir(tmp_path / "m")[0]["threshold"] is None
