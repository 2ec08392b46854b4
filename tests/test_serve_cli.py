"""`fraudseq serve`: refuses bad configurations; serves a real model in a subprocess."""

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from test_cli import run

KEY_VAR = "FRAUDSEQ_TEST_SERVE_KEY"


def test_serve_refuses_an_unset_or_empty_api_key_variable(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(KEY_VAR, raising=False)
    assert run(monkeypatch, "serve", tmp_path, "--api-key-env", KEY_VAR) == 1
    assert f"{KEY_VAR} is not set" in capsys.readouterr().err
    monkeypatch.setenv(KEY_VAR, "")
    assert run(monkeypatch, "serve", tmp_path, "--api-key-env", KEY_VAR) == 1
    assert f"{KEY_VAR} is empty" in capsys.readouterr().err


def test_serve_refuses_memory_state_with_several_workers(tmp_path, monkeypatch, capsys):
    assert run(monkeypatch, "serve", tmp_path, "--workers", 2) == 1
    assert "shared store" in capsys.readouterr().err


def test_serve_refuses_a_directory_that_is_not_a_model(tmp_path, monkeypatch, capsys):
    assert run(monkeypatch, "serve", tmp_path / "missing") == 1
    assert "not a model directory" in capsys.readouterr().err


# ------------------------------------------------------------------ real server


@pytest.fixture(scope="module")
def served_model(served_xgboost):
    pytest.importorskip("fraudseq.serving.detector")
    model_dir, frame = served_xgboost
    return model_dir, frame[frame.ts >= "2026-01-24"].head(50)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def as_json(row) -> dict:
    return {
        "tx_id": row.tx_id,
        "card_id": row.card_id,
        "ts": row.ts.isoformat(),
        "amount": float(row.amount),
        **{c: getattr(row, c) for c in ("mcc", "country", "channel", "device_id", "merchant_id")},
    }


class Server:
    def __init__(self, *args: str, log, env: dict | None = None) -> None:
        self.log = log  # a file, not a pipe: a full pipe would block the server
        self._out = log.open("w")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "fraudseq", "serve", *args, "--port", str(self.port)]
        self.proc = subprocess.Popen(
            [*command, "--no-access-log"],
            stdout=self._out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"server exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        pytest.fail(f"server not ready after {timeout}s:\n{self.output()}")

    def stop(self, sig: int = signal.SIGINT) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()
        return self.proc.returncode

    def output(self) -> str:
        return self.log.read_text()


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_scores_over_http(served_model, tmp_path, workers):
    model_dir, rows = served_model
    server = Server(
        str(model_dir),
        "--state",
        f"sqlite:///{tmp_path / 'state.db'}",
        "--workers",
        str(workers),
        "--reasons",
        "all" if workers > 1 else "alerts",
        "--api-key-env",
        KEY_VAR,
        "--clock",  # the rows are from January 2026: a replay
        "data",
        log=tmp_path / "server.log",
        env={KEY_VAR: "k3y"},
    )
    try:
        server.wait_ready()
        headers = {"X-API-Key": "k3y"}
        with httpx.Client(base_url=server.url, headers=headers, timeout=30) as client:
            txs = [as_json(row) for row in rows.itertuples()]
            first = client.post("/v1/score", json=txs[0])
            assert first.status_code == 200, first.text
            assert 0 <= first.json()["score"] <= 100
            # --reasons reached the detector (through the environment for workers > 1)
            ready = client.get("/readyz").json()
            assert ready["reasons"] == ("all" if workers > 1 else "alerts"), ready
            batch = client.post("/v1/score/batch", json={"transactions": txs[1:]})
            assert batch.status_code == 200, batch.text
            assert [r["transaction_id"] for r in batch.json()["results"]] == [
                t["tx_id"] for t in txs[1:]
            ]
            again = client.post("/v1/score", json=txs[0])  # idempotent replay
            assert again.json() == first.json()
            feedback = {"transaction_id": txs[0]["tx_id"], "label": 1}
            assert client.post("/v1/feedback", json=feedback).status_code == 200
            bad = client.post("/v1/score", json={**txs[0], "amount": "NaN"})
            assert bad.status_code == 422
            assert httpx.post(server.url + "/v1/score", json=txs[0]).status_code == 401
            metrics = client.get("/metrics").text
            assert 'route="/v1/score",status="200"} 2.0' in metrics
            assert "fraudseq_transactions_scored_total 50.0" in metrics  # every worker's
            assert "fraudseq_transactions_replayed_total 1.0" in metrics
    finally:
        # what an orchestrator sends; uvicorn used to re-raise it and exit with 143
        code = server.stop(signal.SIGTERM)
    assert code == 0, server.output()


def test_serve_closes_slow_clients(served_model, tmp_path):
    """--header-timeout and --body-timeout reach every worker (uvicorn spawns them)."""
    model_dir, rows = served_model
    server = Server(
        str(model_dir),
        "--state",
        f"sqlite:///{tmp_path / 'state.db'}",
        "--workers",
        "2",
        "--header-timeout",
        "1",
        "--body-timeout",
        "1",
        log=tmp_path / "server.log",
    )
    try:
        server.wait_ready()
        opened = time.monotonic()
        partial = socket.create_connection(("127.0.0.1", server.port))
        partial.sendall(b"POST /v1/score HTTP/1.1\r\nHost: x\r\n")
        stalled = socket.create_connection(("127.0.0.1", server.port))
        stalled.sendall(
            b"POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n{"
        )
        for sock, words in ((partial, b"headers"), (stalled, b"body")):
            with sock:
                sock.settimeout(10)
                answer = b""
                while chunk := sock.recv(65536):  # until the server closes it
                    answer += chunk
                assert answer.startswith(b"HTTP/1.1 408 ") and words in answer, answer
        assert time.monotonic() - opened < 8
        assert httpx.get(server.url + "/healthz").status_code == 200
    finally:
        code = server.stop()
    assert code == 0, server.output()


# ------------------------------------------------------------------ start-up store errors


def read_only(path) -> bool:
    """Make `path` unwritable even for root (chattr +i), or by its mode otherwise; whether
    it worked."""
    if os.geteuid() == 0:
        done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False)
        return done.returncode == 0
    path.chmod(0o444)
    return not os.access(path, os.W_OK)


@pytest.fixture
def start_up_cases(served_model, tmp_path):
    """(state URL, words the error must hold) for stores that cannot be used."""
    model_dir, _ = served_model
    directory = tmp_path / "d1"
    directory.mkdir()
    text = tmp_path / "notes.db"
    text.write_text("just text " * 100)
    damaged = tmp_path / "state.db"  # a state file whose meta table's page is damaged
    from fraudseq.serving.stores.sqlite import SQLiteStore

    SQLiteStore(damaged).close()
    with damaged.open("r+b") as file:
        file.seek(4096)  # page 2
        file.write(b"\xa5" * 4096)
    cases = [
        (f"sqlite:///{directory}", ["is a directory", "name a file in it"]),
        (f"sqlite:///{text}", ["not a SQLite database", "Fix:"]),
        (f"sqlite:///{damaged}", ["damaged", "Fix:"]),
        (f"sqlite:///{text}/state.db", ["is a file, not a directory"]),
        (
            "redis://default:hunter2@127.0.0.1:1/0",
            ["redis://default:***@127.0.0.1:1/0", "Redis unavailable"],
        ),
    ]
    readonly = tmp_path / "readonly.db"
    import sqlite3

    with sqlite3.connect(readonly) as db:  # a valid state file of another run...
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.close()
    if read_only(readonly):  # ...that the server cannot write
        cases.append((f"sqlite:///{readonly}", ["read-only", "writable"]))
    yield model_dir, cases
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(readonly)], capture_output=True, check=False)


def test_store_errors_at_start_up_are_clear_messages(start_up_cases, monkeypatch, capsys):
    pytest.importorskip("redis")
    model_dir, cases = start_up_cases

    def started(*args, **kwargs):
        raise AssertionError("the server started")

    monkeypatch.setattr("uvicorn.run", started)
    for state, words in cases:
        # A traceback would escape run() as an exception other than SystemExit.
        assert run(monkeypatch, "serve", model_dir, "--state", state) == 1, state
        err = capsys.readouterr().err
        assert err.startswith("error:"), err
        assert "Traceback" not in err and "hunter2" not in err, err
        for word in words:
            assert word in err, (state, err)
