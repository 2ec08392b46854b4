"""Model directories: JSON + safetensors + a SHA-256 manifest; never pickle.

A directory is written to a temporary sibling and swapped in only once complete, so a
failed save never destroys the model that was there before, and it replaces only an empty
directory or a fraudseq model directory (see :func:`check_replaceable`). model.json is strict
JSON: non-finite numbers (a threshold that alerts on nothing, a metric undefined without
fraud) are written as null, and the reader gives each its meaning back.

The manifest catches accidents (a truncated copy, a file missing or edited by mistake), not
deliberate edits: whoever can change model.json can recompute the manifest. With the
environment variable ``FRAUDSEQ_MODEL_KEY`` set, save also writes ``signature.json``, an
HMAC-SHA256 of the manifest under that key, and load refuses a model whose signature is
missing or does not match. Load refuses symbolic links that lead out of the directory, and
reads every file once: the bytes it checks are the bytes it uses.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save_file

from fraudseq.errors import ModelDirectoryError
from fraudseq.io import default_mode, json_safe

MODEL_JSON = "model.json"
WEIGHTS = "weights.safetensors"
MANIFEST = "manifest.json"
SIGNATURE = "signature.json"
KEY_ENV = "FRAUDSEQ_MODEL_KEY"
#: The files a model writes besides the manifest and the signature: model.json, the torch
#: weights, and XGBoost's native file (an ensemble's members prefix theirs with m0., m1., ...).
MODEL_FILE = re.compile(r"model\.json|weights\.safetensors|(m\d+\.)*booster\.(ubj|json)")
#: Files the operating system drops into folders; they do not make a folder the user's data.
OS_FILES = frozenset({".DS_Store"})
#: What a directory of model files holds, as its manifest's "kind" says (a manifest without
#: one is a model's): a model scores; an encoder (`fraudseq pretrain`) only fills a model's
#: encoder (`fraudseq train --init`). Loading checks the kind, so neither passes for the other.
KINDS = {
    "model": "a model directory (from `fraudseq train`)",
    "encoder": "a pretrained encoder (from `fraudseq pretrain`)",
}
#: What to do when a directory of one kind is given where `kind` is needed.
KIND_FIX = {
    "model": "an encoder scores nothing by itself: fine-tune a model from it with "
    "`fraudseq train --init ENCODER_DIR` and give that model",
    "encoder": "give the output of `fraudseq pretrain`",
}


def model_key() -> bytes | None:
    """The signing key from FRAUDSEQ_MODEL_KEY, or None when it is not set. Set but empty
    is an error: a secret that failed to arrive must not turn checking off."""
    value = os.environ.get(KEY_ENV)
    if value is None:
        return None
    if not value:
        raise ModelDirectoryError(
            f"{KEY_ENV} is set but empty: set it to the key models are signed with, or unset "
            "it to save and load models without a signature"
        )
    return value.encode()


def _hmac(key: bytes, manifest: bytes) -> str:
    return hmac.new(key, manifest, hashlib.sha256).hexdigest()


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
    kind: str = "model",
) -> Path:
    """Write config (non-finite numbers as null), tensors and extra files to `out`
    atomically, with a manifest (and its signature when FRAUDSEQ_MODEL_KEY is set) that
    names its `kind` unless it is a model (see KINDS).

    `out` must be new, empty or a model directory (:func:`check_replaceable`); when it is a
    symbolic link, the directory it names is replaced and the link kept."""
    key = model_key()
    out = _link_target(Path(out))
    bad = [name for name in (extra_files or {}) if not MODEL_FILE.fullmatch(name)]
    if bad:  # check_replaceable would not recognise the directory as a model afterwards
        raise ValueError(f"not model file names: {bad}; see artifacts.MODEL_FILE")
    with atomic_directory(out, check_replaceable) as staging:
        text = json.dumps(json_safe(config), indent=2, sort_keys=True, allow_nan=False)
        (staging / MODEL_JSON).write_text(text + "\n")
        if tensors:
            save_file({k: v.detach().contiguous() for k, v in tensors.items()}, staging / WEIGHTS)
            os.chmod(staging / WEIGHTS, default_mode(0o666))  # safetensors writes it 0600
        for name, content in (extra_files or {}).items():
            (staging / name).write_bytes(content)
        files = {p.name: sha256(p) for p in sorted(staging.iterdir())}
        manifest = {"algorithm": "sha256", "files": files}
        if kind != "model":  # a model's manifest stays as it always was
            manifest = {"algorithm": "sha256", "kind": kind, "files": files}
        manifest_bytes = (json.dumps(manifest, indent=2) + "\n").encode()
        (staging / MANIFEST).write_bytes(manifest_bytes)
        if key is not None:
            signature = {"algorithm": "hmac-sha256", "manifest": _hmac(key, manifest_bytes)}
            (staging / SIGNATURE).write_text(json.dumps(signature, indent=2) + "\n")
    return out


@contextlib.contextmanager
def atomic_directory(out: Path, check: Callable[[Path], None]) -> Iterator[Path]:
    """Yield a new empty directory beside `out`; when the block succeeds it replaces `out`
    as a whole, else it is deleted. `check(out)` raises unless `out` may be replaced; it
    runs before the block and again just before the swap."""
    check(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    os.chmod(staging, default_mode(0o777))
    try:
        yield staging
        _swap_in(staging, out, check)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def check_replaceable(out: str | Path) -> None:
    """Raise unless a model directory may be written to `out`: it does not exist, or it is
    an empty directory, or it is a fraudseq model directory and nothing else: its manifest
    parses, names only model files, and the folder holds only those, the manifest and the
    signature (plus .DS_Store), as regular files. Anything else might be the user's data,
    which replacing the directory would delete. A link is judged by the directory it names."""
    out = _link_target(Path(out))
    if not out.exists():
        return
    if not out.is_dir():
        raise ModelDirectoryError(f"{out} exists and is not a directory; choose another name")
    problem = _not_only_a_model(out)
    if problem:
        raise ModelDirectoryError(
            f"{out} is not a fraudseq model directory ({problem}); saving would replace it "
            "and delete everything in it: choose another directory, or empty it yourself"
        )


def model_manifest(path: str | Path) -> dict[str, str] | None:
    """The files listed by `path`'s manifest when `path` is a fraudseq model directory (its
    manifest.json is a regular file, parses, and lists model.json and only model files),
    else None."""
    manifest = Path(path) / MANIFEST
    try:
        if manifest.is_symlink() or not manifest.is_file():
            return None
        document = json.loads(manifest.read_bytes())
        files = document["files"]
        if document.get("algorithm") != "sha256" or MODEL_JSON not in files:
            return None
        if all(isinstance(v, str) and MODEL_FILE.fullmatch(k) for k, v in files.items()):
            return files
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    return None


def _not_only_a_model(path: Path) -> str | None:
    """Why the existing directory `path` may not be replaced, or None when it may."""
    entries = sorted(path.iterdir())
    if not [e for e in entries if e.name not in OS_FILES]:
        return None  # empty
    if not (path / MANIFEST).is_file():
        return f"no {MANIFEST}"
    files = model_manifest(path)
    if files is None:
        return f"its {MANIFEST} is not a fraudseq manifest"
    allowed = {*files, MANIFEST, SIGNATURE, *OS_FILES}
    others = [e.name for e in entries if e.name not in allowed]
    if others:
        return f"it also holds {_names(others)}"
    odd = [e.name for e in entries if e.is_symlink() or not e.is_file()]
    if odd:
        return f"not regular files: {_names(odd)}"
    return None


def _names(names: list[str], limit: int = 5) -> str:
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _link_target(path: Path) -> Path:
    """`path`, or the path a symbolic link `path` names (which must exist)."""
    if not path.is_symlink():
        return path
    target = path.resolve()
    if not target.exists():
        raise ModelDirectoryError(
            f"{path} is a symbolic link to {target}, which does not exist; give a directory"
        )
    return target


def _swap_in(staging: Path, out: Path, check: Callable[[Path], None]) -> None:
    """Replace `out` by `staging`, keeping the old directory until the rename succeeded."""
    check(out)
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


def verify_model_dir(path: str | Path, kind: str = "model") -> dict[str, str]:
    """Check every file against the manifest (and the signature when FRAUDSEQ_MODEL_KEY is
    set) and that the directory is of `kind`; return the manifest's files, or raise
    ModelDirectoryError naming the problem."""
    return _read_verified(Path(path), kind)[0]


def load_model_dir(
    path: str | Path, kind: str = "model"
) -> tuple[dict, dict[str, torch.Tensor], dict[str, bytes]]:
    """Verify a directory of `kind` (a model unless told), then read its config, tensors
    and other files as bytes.

    Nothing is unpickled and no code from the directory is executed. Each file is read
    once: what is parsed is what was checked."""
    path = Path(path)
    files, contents = _read_verified(path, kind)
    if MODEL_JSON not in files:
        raise ModelDirectoryError(f"{path}: the manifest does not list {MODEL_JSON}")
    try:
        config = json.loads(contents[MODEL_JSON].decode("utf-8"))
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise ModelDirectoryError(
            f"{path / MODEL_JSON}: not valid JSON ({exc}), although it matches the manifest: "
            "it was written wrongly or edited; retrain or restore the model directory"
        ) from None
    if not isinstance(config, dict):
        raise ModelDirectoryError(
            f"{path / MODEL_JSON}: not a JSON object, although it matches the manifest; "
            "retrain or restore the model directory"
        )
    tensors: dict[str, torch.Tensor] = {}
    if WEIGHTS in files:
        try:
            tensors = load_tensors(contents[WEIGHTS])
        except (SafetensorError, ValueError) as exc:
            raise ModelDirectoryError(f"{path / WEIGHTS}: unreadable weights ({exc})") from None
    others = {name: data for name, data in contents.items() if name not in (MODEL_JSON, WEIGHTS)}
    return config, tensors, others


def _read_verified(path: Path, kind: str = "model") -> tuple[dict[str, str], dict[str, bytes]]:
    """The manifest's files and their contents, each read once and checked against it, of a
    directory whose manifest names `kind`."""
    if not path.is_dir():
        raise ModelDirectoryError(
            f"{path}: not a model directory (train one with `fraudseq train`)"
        )
    root = path.resolve()  # `path` itself may be a link; what is inside it may not leave it
    for entry in sorted(root.iterdir()):
        if entry.is_symlink() and not _inside(entry, root):
            raise ModelDirectoryError(
                f"{path / entry.name}: a symbolic link to {os.readlink(entry)}, outside the "
                "model directory; a model's files must be inside it: copy them in or retrain"
            )
    manifest_path = path / MANIFEST
    try:
        manifest_bytes = (root / MANIFEST).read_bytes()
        manifest = json.loads(manifest_bytes)
        files = manifest["files"]
        if not all(isinstance(v, str) for v in files.values()):
            raise ValueError("file digests are not text")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ModelDirectoryError(
            f"{manifest_path}: missing or unreadable manifest ({exc}); "
            "retrain or restore the directory"
        ) from None
    _check_signature(path, root, manifest_bytes)
    found = manifest.get("kind", "model")
    if found != kind:
        what = KINDS.get(found, f"a directory of an unknown kind {found!r}")
        raise ModelDirectoryError(f"{path} is {what}, not {KINDS[kind]}; {KIND_FIX[kind]}")
    unlisted = sorted(  # e.g. weights dropped from the manifest; dotfiles are the OS's
        p.name
        for p in root.iterdir()
        if p.name not in (*files, MANIFEST, SIGNATURE) and p.name[0] != "."
    )
    if unlisted:
        raise ModelDirectoryError(
            f"{path}: {', '.join(unlisted)} not in the manifest: the directory was modified; "
            "retrain or restore it"
        )
    contents: dict[str, bytes] = {}
    for name, expected in files.items():
        if Path(name).name != name or name in (MANIFEST, SIGNATURE):
            raise ModelDirectoryError(f"{manifest_path}: invalid file name {name!r}")
        file = root / name
        if not file.is_file():
            raise ModelDirectoryError(f"{path}: {name} is missing; the directory is incomplete")
        try:
            data = file.read_bytes()
        except OSError as exc:
            raise ModelDirectoryError(f"{path / name}: unreadable ({exc.strerror})") from None
        if hashlib.sha256(data).hexdigest() != expected:
            raise ModelDirectoryError(
                f"{path / name}: SHA-256 does not match the manifest: the file was modified or "
                "truncated; retrain or restore the model directory"
            )
        contents[name] = data
    return files, contents


def _inside(link: Path, root: Path) -> bool:
    """Whether the symbolic link `link` leads to a path inside `root` (a loop does not)."""
    try:
        return link.resolve(strict=False).is_relative_to(root)
    except (OSError, RuntimeError):  # a loop: RuntimeError before Python 3.13
        return False


def _check_signature(path: Path, root: Path, manifest_bytes: bytes) -> None:
    """With FRAUDSEQ_MODEL_KEY set, refuse a model whose manifest is not signed with it."""
    key = model_key()
    if key is None:
        return  # the manifest alone: accidents are caught, deliberate edits are not
    signature_path = root / SIGNATURE
    if not signature_path.exists():
        raise ModelDirectoryError(
            f"{path}: the model is not signed ({SIGNATURE} is missing) and {KEY_ENV} is set, "
            "so only models signed with that key load: retrain it with the key set (or load "
            f"it with {KEY_ENV} unset and save it with it set, if you trust it), or unset "
            f"{KEY_ENV}"
        )
    try:
        signature = json.loads(signature_path.read_bytes())
        stored = signature["manifest"]
        if signature.get("algorithm") != "hmac-sha256" or not isinstance(stored, str):
            raise ValueError("not an hmac-sha256 signature")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ModelDirectoryError(
            f"{path / SIGNATURE}: unreadable signature ({exc}); restore the model directory "
            "from a trusted copy or retrain it"
        ) from None
    if not hmac.compare_digest(stored.encode(), _hmac(key, manifest_bytes).encode()):
        raise ModelDirectoryError(
            f"{path / SIGNATURE}: the signature does not match the manifest under "
            f"{KEY_ENV}: the model was changed after it was signed, or signed with another "
            "key; restore it from a trusted copy or retrain it with this key"
        )
