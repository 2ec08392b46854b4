"""Model directories: JSON + safetensors + a SHA-256 manifest; never pickle.

A directory is written to a temporary sibling and swapped in only once complete, so a
failed save never destroys the model that was there before. model.json is strict JSON:
non-finite numbers (a threshold that alerts on nothing, a metric undefined without fraud)
are written as null, and the reader gives each its meaning back.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from fraudseq.errors import ModelDirectoryError
from fraudseq.io import default_mode, json_safe

MODEL_JSON = "model.json"
WEIGHTS = "weights.safetensors"
MANIFEST = "manifest.json"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_model_dir(
    out: str | Path,
    config: dict,
    tensors: dict[str, torch.Tensor] | None = None,
    extra_files: dict[str, bytes] | None = None,
) -> Path:
    """Write config (non-finite numbers as null), tensors and extra files to `out`
    atomically, with a manifest."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    os.chmod(staging, default_mode(0o777))
    try:
        text = json.dumps(json_safe(config), indent=2, sort_keys=True, allow_nan=False)
        (staging / MODEL_JSON).write_text(text + "\n")
        if tensors:
            save_file({k: v.detach().contiguous() for k, v in tensors.items()}, staging / WEIGHTS)
            os.chmod(staging / WEIGHTS, default_mode(0o666))  # safetensors writes it 0600
        for name, content in (extra_files or {}).items():
            (staging / name).write_bytes(content)
        files = {p.name: sha256(p) for p in sorted(staging.iterdir())}
        manifest = {"algorithm": "sha256", "files": files}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        _swap_in(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def check_replaceable(out: str | Path) -> None:
    """Raise unless a model directory may be written to `out`: it does not exist, or it is
    an empty directory or a model directory (one with a manifest). Anything else might be
    the user's data, which replacing the directory would delete."""
    out = Path(out)
    if not out.exists():
        return
    if not out.is_dir():
        raise ModelDirectoryError(f"{out} exists and is not a directory; choose another --out")
    if not (out / MANIFEST).is_file() and any(out.iterdir()):
        raise ModelDirectoryError(
            f"{out} is a directory with files in it but not a model directory (no {MANIFEST}); "
            "it would be replaced as a whole, so choose another --out or empty it first"
        )


def _swap_in(staging: Path, out: Path) -> None:
    """Replace `out` by `staging`, keeping the old directory until the rename succeeded."""
    check_replaceable(out)
    if not out.exists():
        os.replace(staging, out)
        return
    backup = out.with_name(f".{out.name}.old-{os.getpid()}")
    os.replace(out, backup)
    try:
        os.replace(staging, out)
    except BaseException:
        os.replace(backup, out)
        raise
    shutil.rmtree(backup, ignore_errors=True)


def verify_model_dir(path: str | Path) -> dict[str, str]:
    """Check every file against the manifest; raise ModelDirectoryError naming the problem."""
    path = Path(path)
    if not path.is_dir():
        raise ModelDirectoryError(
            f"{path}: not a model directory (train one with `fraudseq train`)"
        )
    manifest_path = path / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
        if not all(isinstance(v, str) for v in files.values()):
            raise ValueError("file digests are not text")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ModelDirectoryError(
            f"{manifest_path}: missing or unreadable manifest ({exc}); "
            "retrain or restore the directory"
        ) from None
    unlisted = sorted(  # e.g. weights dropped from the manifest; dotfiles are the OS's
        p.name for p in path.iterdir() if p.name not in (*files, MANIFEST) and p.name[0] != "."
    )
    if unlisted:
        raise ModelDirectoryError(
            f"{path}: {', '.join(unlisted)} not in the manifest: the directory was modified; "
            "retrain or restore it"
        )
    for name, expected in files.items():
        file = path / name
        if Path(name).name != name:
            raise ModelDirectoryError(f"{manifest_path}: invalid file name {name!r}")
        if not file.is_file():
            raise ModelDirectoryError(f"{path}: {name} is missing; the directory is incomplete")
        if sha256(file) != expected:
            raise ModelDirectoryError(
                f"{file}: SHA-256 does not match the manifest: the file was modified or "
                "truncated; retrain or restore the model directory"
            )
    return files


def load_model_dir(path: str | Path) -> tuple[dict, dict[str, torch.Tensor], dict[str, bytes]]:
    """Verify a model directory, then read its config, tensors and other files as bytes.

    Nothing is unpickled and no code from the directory is executed."""
    path = Path(path)
    files = verify_model_dir(path)
    if MODEL_JSON not in files:
        raise ModelDirectoryError(f"{path}: the manifest does not list {MODEL_JSON}")
    config = json.loads((path / MODEL_JSON).read_text())
    tensors: dict[str, torch.Tensor] = {}
    if WEIGHTS in files:
        try:
            tensors = load_file(path / WEIGHTS)
        except (SafetensorError, OSError) as exc:
            raise ModelDirectoryError(f"{path / WEIGHTS}: unreadable weights ({exc})") from None
    others = {
        name: (path / name).read_bytes()
        for name in files
        if name not in (MODEL_JSON, WEIGHTS, MANIFEST)
    }
    return config, tensors, others
