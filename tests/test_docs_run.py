"""Every ``fraudseq ...`` command the docs show is RUN, page by page, in the page's order
(issue 21), on small simulated data; test_docs.py only parses them (and runs
docs/getting-started.md itself).

- Each page runs in its own sandbox directory holding the files its commands name: tx.csv,
  tx.csv.gz, tx.parquet, big.parquet, schema.toml, schemas/, and models model/, champion/
  (the default model) and challenger/, xgb/ (xgboost), made once per session from
  `fraudseq simulate` (few accounts, 100 days from 2026-01-01, so every date the docs use
  falls inside).
- A command is run as written, except for the substitutions of `substitute` (the table
  SUBSTITUTIONS says each one and why); it must exit 0 and the files it declares
  (--out, --json) must exist.
- `serve` and `consume` run as subprocesses: started, waited for (GET /healthz; the consumer
  blocked in XREADGROUP on the test Redis), stopped with SIGTERM, and must exit 0.
- The commands that are not run are listed in PARSE_ONLY with the reason; test_docs.py
  parses them. A new docs command is run unless it is added there.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from test_cli import run
from test_docs import COMMANDS, ROOT

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

# (regular expression on "page: fraudseq command", reason): these commands are only parsed.
PARSE_ONLY = [
    (r"--engine ray", "needs a Ray cluster (or starts a local one: minutes); Ray runs are "
     "tested in test_engine_ray*.py"),
    (r"models:/", "needs an MLflow registry holding the model; test_mlflow.py covers it"),
    (r"export-history|train history\.parquet", "needs a state store filled by a served "
     "feedback loop; test_production_loop.py runs that sequence"),
    (r"production_loop\.sh: serve \$@", "a shell function's body; its calls are a registry "
     "serve and the README's shadow serve"),
]  # fmt: skip

# Commands the docs show failing, with the exit code they say; their outputs must not exist.
EXPECTED_EXIT = {"production.md: export xgb --out xgb-onnx": 1}

# Run by another test, as a whole page.
RUN_ELSEWHERE = {"getting-started.md": "test_docs.py::first_run"}

ACCOUNTS = 200  # simulated accounts in the sandbox; the docs' own `simulate` lines: <= 500
SUBSTITUTIONS = {
    "--epochs N": "--epochs 1; train/compare without --epochs get --epochs 1 (time)",
    "simulate --accounts N": "--accounts min(N, 500) (time); --days and dates are kept",
    "--work-dir /abs/path": "--work-dir work (a directory of the sandbox)",
    "--transaction-id T...": "the last transaction of the named data file (ids differ "
    "on smaller data)",
    "$schema": "schemas/simulator.toml (the example script's variable)",
    "MODEL, DIR": "model, model-onnx (a synopsis' placeholders)",
    "serve": "--port <free port> added (parallel test workers)",
    "serve --state sqlite:///F": "F removed first when a serve of another model used it "
    "earlier on the page (a new section of the page starts afresh; a store holds one model's "
    "state)",
    "consume --stream URL": "the test Redis' address; the docs' query (stream, prefix) kept",
}


def labelled(where: str, args: list[str]) -> str:
    """'page: command', as PARSE_ONLY's patterns see it."""
    return f"{where.split(':')[0]}: {shlex.join(args)}".replace("'", "")


def parse_only_reason(where: str, args: list[str]) -> str | None:
    for pattern, reason in PARSE_ONLY:
        if re.search(pattern, labelled(where, args)):
            return reason
    return None


def pages() -> dict[str, list[tuple[str, list[str]]]]:
    found: dict[str, list[tuple[str, list[str]]]] = {}
    for where, args in COMMANDS:
        page = where.split(":")[0]
        if page not in RUN_ELSEWHERE and parse_only_reason(where, args) is None:
            found.setdefault(page, []).append((where, args))
    return found


PAGES = pages()


def test_parse_only_is_short_and_current():
    """Every PARSE_ONLY entry still matches a docs command (no stale excuses), and most
    commands run."""
    for pattern, reason in PARSE_ONLY:
        assert reason and any(re.search(pattern, labelled(w, a)) for w, a in COMMANDS), pattern
    for where, args in COMMANDS:  # each docs command is run here, run elsewhere, or listed
        page = where.split(":")[0]
        assert (
            (where, args) in PAGES.get(page, [])
            or page in RUN_ELSEWHERE
            or parse_only_reason(where, args)
        ), where
    ran = sum(len(v) for v in PAGES.values())
    assert ran >= 0.6 * len(COMMANDS), (ran, len(COMMANDS))
    assert set(RUN_ELSEWHERE) <= {w.split(":")[0] for w, _ in COMMANDS}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def option(words: list[str], name: str) -> str | None:
    return words[words.index(name) + 1] if name in words else None


def substitute(words: list[str], sandbox: Path, redis_url: str | None) -> list[str]:
    """The command as the test runs it: SUBSTITUTIONS, applied."""
    words = [w.replace("$schema", "schemas/simulator.toml") for w in words]
    words = [{"MODEL": "model", "DIR": "model-onnx"}.get(w, w) for w in words]
    out = []
    for i, word in enumerate(words):
        before = words[i - 1] if i else ""
        if before == "--epochs":
            word = "1"
        elif before == "--accounts" and words[0] == "simulate":
            word = str(min(int(word), 500))
        elif before == "--work-dir" and os.path.isabs(word):
            word = "work"
        elif before == "--transaction-id":
            import pandas as pd

            data = sandbox / words[2]
            frame = pd.read_parquet(data) if data.suffix == ".parquet" else pd.read_csv(data)
            word = str(frame["tx_id"].iloc[-1])
        elif before == "--stream" and redis_url is not None:
            doc, test = urlsplit(word), urlsplit(redis_url)
            word = urlunsplit((test.scheme, test.netloc, test.path, doc.query, ""))
        out.append(word)
    if out[0] in ("train", "compare") and "--epochs" not in out:
        out += ["--epochs", "1"]
    if out[0] == "serve":
        out += ["--port", str(free_port())]
    return out


def declared_outputs(words: list[str]) -> list[str]:
    return [v for name in ("--out", "--json") if (v := option(words, name)) is not None]


@pytest.fixture(scope="session")
def sandbox_base(tmp_path_factory):
    """The files the docs' commands name, small: simulated data in every format, a schema,
    the default model (model/, champion/) and an xgboost one (challenger/, xgb/)."""
    import pandas as pd

    base = tmp_path_factory.mktemp("docs_sandbox")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(base)
        assert run(mp, "simulate", "--out", "tx.csv.gz", "--accounts", ACCOUNTS, "--days",
                   100, "--seed", 0) == 0  # fmt: skip
        frame = pd.read_csv("tx.csv.gz")
        frame.to_csv("tx.csv", index=False)
        frame["ts"] = pd.to_datetime(frame["ts"])
        frame.to_parquet("tx.parquet", index=False)
        shutil.copy("tx.parquet", "big.parquet")
        shutil.copy(ROOT / "schemas" / "simulator.toml", "schema.toml")
        common = ["--schema", "schema.toml", "--train-until", "2026-02-16", "--epochs", "1"]
        assert run(mp, "train", "tx.parquet", "--out", "model", *common) == 0
        assert run(mp, "train", "tx.parquet", "--out", "xgb", "--model", "xgboost", *common) == 0
    shutil.copytree(base / "model", base / "champion")
    shutil.copytree(base / "xgb", base / "challenger")
    return base


def start_and_stop(words: list[str], cwd: Path, ready, timeout: float = 180) -> None:
    """Start `fraudseq WORDS`, wait until `ready()` is true, SIGTERM it: it must exit 0
    (or, for uvicorn, end by the signal after a complete graceful shutdown)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "fraudseq", *words]
    process = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            if process.poll() is not None:
                pytest.fail(f"fraudseq {shlex.join(words)} exited {process.returncode}:\n"
                            f"{process.stdout.read()[-3000:]}")  # fmt: skip
            assert time.monotonic() < deadline, f"fraudseq {shlex.join(words)} never ready"
            time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
        # uvicorn (>= 0.29) re-raises the SIGTERM it caught once its graceful shutdown is
        # done, so `serve` ends by that signal (-15) after "Application shutdown complete"
        graceful = process.returncode == -signal.SIGTERM and "shutdown complete" in output
        assert process.returncode == 0 or graceful, (
            f"{shlex.join(words)}: {process.returncode}\n{output}"
        )
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def http_ok(url: str):
    def ready() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                return reply.status == 200
        except OSError:
            return False

    return ready


def reading(url: str):
    """True once a client blocks in XREADGROUP: the consumer's loop runs (its SIGTERM
    handler is installed before)."""
    import redis

    client = redis.Redis.from_url(urlunsplit(urlsplit(url)._replace(query="")))

    def ready() -> bool:
        return any(c.get("cmd") == "xreadgroup" for c in client.client_list())

    return ready


@pytest.mark.parametrize("page", sorted(PAGES))
def test_page_commands_run(page, sandbox_base, tmp_path, monkeypatch, request):
    sandbox = tmp_path / "sandbox"
    shutil.copytree(sandbox_base, sandbox)
    (sandbox / "schemas").symlink_to(ROOT / "schemas", target_is_directory=True)
    monkeypatch.chdir(sandbox)
    monkeypatch.setenv("FRAUDSEQ_API_KEY", "docs-test-key")
    needs_redis = any(args[0] == "consume" for _, args in PAGES[page])
    redis_url = request.getfixturevalue("redis_url") if needs_redis else None
    served: dict[str, str] = {}  # state store -> the model last served with it
    for where, args in PAGES[page]:
        words = substitute(args, sandbox, redis_url)
        state = option(words, "--state") or ""
        if words[0] == "serve" and state.startswith("sqlite:///"):
            if served.get(state, words[1]) != words[1]:
                (sandbox / state.removeprefix("sqlite:///")).unlink(missing_ok=True)
            served[state] = words[1]
        shown = f"{where}\n  ran: fraudseq {shlex.join(words)}"
        code = 0
        if words[0] == "serve":
            port = option(words, "--port")
            start_and_stop(words, sandbox, http_ok(f"http://127.0.0.1:{port}/healthz"))
        elif words[0] == "consume":
            start_and_stop(words, sandbox, reading(option(words, "--stream")))
        else:
            code = EXPECTED_EXIT.get(f"{page}: {shlex.join(words)}", 0)
            assert run(monkeypatch, *words) == code, shown
        for output in declared_outputs(words):
            if not output.startswith("sqlite:"):
                assert (sandbox / output).exists() == (code == 0), f"{shown}\n  {output}?"
