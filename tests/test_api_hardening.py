"""Hardening of the HTTP service (issue 17): no secret or server path in any reply or log,
store failures an operator sees (logged with an id, /readyz, permanent or transient), read
and header timeouts, control characters refused in every text field.

The fake detector of test_api covers the app's mapping; the real Detector on a small
XGBoost model covers real stores failing: Redis down behind a password, a damaged SQLite
file, a full disk, a read-only file, a locked database.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fraudseq.serving import StateStoreError
from fraudseq.serving import api as api_module
from fraudseq.serving.api import create_app, redact_state_url
from test_api import FakeDetector, tx

PASSWORD = "hunter2"
REDIS_URL = f"redis://default:{PASSWORD}@127.0.0.1:1/0"  # nothing listens on port 1

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------ redaction


def test_one_function_masks_every_form_of_credential():
    cases = {
        "redis://default:hunter2@cache:6379/0": "redis://default:***@cache:6379/0",
        "rediss://:hunter2@cache/0": "rediss://:***@cache/0",
        "redis://hunter2@cache/0": "redis://***@cache/0",
        "redis://u:hun@ter2@cache/0": "redis://u:***@cache/0",
        "redis://cache:6379/0?password=hunter2&prefix=fs:": "redis://cache:6379/0?password=***&prefix=fs:",
        "sqlite:////var/lib/fraudseq/state.db": "sqlite:////var/lib/fraudseq/state.db",
        "memory": "memory",
        "error: redis://default:hunter2@cache:6379/0: Redis unavailable; again "
        "redis://x:hunter2@other/1": "error: redis://default:***@cache:6379/0: Redis "
        "unavailable; again redis://x:***@other/1",
    }
    for url, want in cases.items():
        assert redact_state_url(url) == want
        assert redact_state_url(want) == want  # idempotent


def test_the_log_filter_masks_messages_arguments_and_tracebacks(caplog):
    from fraudseq.redaction import RedactingFilter

    logger = logging.getLogger("fraudseq.test-redaction")
    logger.addFilter(RedactingFilter())
    try:
        with caplog.at_level(logging.INFO, logger="fraudseq.test-redaction"):
            logger.info("state %s", REDIS_URL)
            logger.info(f"inline {REDIS_URL}")
            try:
                raise ConnectionError(f"cannot reach {REDIS_URL}")
            except ConnectionError:
                logger.exception("failed")
        assert PASSWORD not in caplog.text
        assert caplog.text.count("default:***@127.0.0.1:1") == 3
    finally:
        logger.filters.clear()


# ------------------------------------------------------------------ store failures (fake)


class FailingDetector(FakeDetector):
    """Scores like FakeDetector, but raises `error` while `failing` is set."""

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error, self.failing = error, True

    def score(self, tx: dict) -> dict:
        if self.failing:
            raise self.error
        return super().score(tx)


def error_records(caplog, error_id: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR and error_id in r.getMessage()]


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        assert PASSWORD not in text, text


def test_a_transient_store_error_is_a_503_with_an_error_id_and_no_detail(caplog):
    detector = FailingDetector(
        StateStoreError(f"{REDIS_URL}: Redis unavailable: Error 111 connecting to 127.0.0.1:1.")
    )
    with TestClient(create_app(detector)) as client, caplog.at_level(logging.INFO):
        response = client.post("/v1/score", json=tx(1))
        metrics = client.get("/metrics").text
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    body = response.json()
    assert body["permanent"] is False and len(body["error_id"]) == 12
    assert body["error_id"] in body["message"] and "retry later" in body["message"]
    for detail in (PASSWORD, "127.0.0.1", "redis", "Error 111"):
        assert detail not in response.text
    logged = error_records(caplog, body["error_id"])
    assert logged, caplog.text  # the details are in the log, at error level, with the id
    assert "default:***@127.0.0.1:1" in logged[0].getMessage()
    assert "transient" in logged[0].getMessage()
    assert_no_secret(caplog.text, metrics)
    assert 'fraudseq_state_store_errors_total{kind="transient"} 1.0' in metrics


def test_a_permanent_store_error_has_no_retry_after_and_keeps_readyz_at_503(caplog):
    detector = FailingDetector(
        StateStoreError(
            "/srv/fraudseq/state.db: SQLite error: the file is damaged (SQLite: database disk "
            "image is malformed, SQLITE_CORRUPT)",
            permanent=True,
        )
    )
    with TestClient(create_app(detector)) as client, caplog.at_level(logging.INFO):
        assert client.get("/readyz").status_code == 200
        response = client.post("/v1/score", json=tx(1))
        assert response.status_code == 503
        assert "retry-after" not in response.headers
        body = response.json()
        assert body["permanent"] is True
        assert "permanent fault" in body["message"] and "operator" in body["message"]
        assert "/srv" not in response.text and "malformed" not in response.text
        assert error_records(caplog, body["error_id"])
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["store"]["status"] == "permanent fault"
        assert ready.json()["store"]["error_id"] == body["error_id"]
        assert "/srv" not in ready.text
        detector.failing = False  # an account whose pages are intact scores again...
        assert client.post("/v1/score", json=tx(2)).status_code == 200
        assert client.get("/readyz").status_code == 503  # ...but the store still needs repair
        assert client.get("/healthz").status_code == 200
        metrics = client.get("/metrics").text
    assert 'fraudseq_state_store_errors_total{kind="permanent"} 1.0' in metrics


def test_readyz_reports_a_failing_store_until_a_store_operation_succeeds(monkeypatch):
    detector = FailingDetector(StateStoreError("state.db: the disk is full"))
    with TestClient(create_app(detector)) as client:
        error_id = client.post("/v1/score", json=tx(1)).json()["error_id"]
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["store"] | {"since": None} == {
            "status": "failing",
            "error_id": error_id,
            "permanent": False,
            "since": None,
        }
        # With no traffic, the failure ages out: the store is probed again by real requests.
        monkeypatch.setattr(api_module, "STORE_FAILURE_WINDOW_SECONDS", 0.0)
        assert client.get("/readyz").status_code == 200
        monkeypatch.undo()
        client.post("/v1/score", json=tx(1))
        assert client.get("/readyz").status_code == 503
        detector.failing = False
        assert client.post("/v1/score", json=tx(1)).status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["store"] == {"status": "ok"}


def test_readyz_probe_is_bounded_in_time(monkeypatch):

    release = threading.Event()

    class Hanging(FakeDetector):
        def ready(self) -> bool:
            release.wait(10)
            return True

    monkeypatch.setattr(api_module, "READY_TIMEOUT_SECONDS", 0.2)
    with TestClient(create_app(Hanging())) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503 and "did not answer" in ready.json()["message"]
        # The probe runs on its own thread: scoring does not queue behind it.
        assert client.post("/v1/score", json=tx(1)).status_code == 200
        release.set()


# ------------------------------------------------------------------ real stores failing


@pytest.fixture(scope="module")
def real_model(tmp_path_factory):
    import fraudseq

    frame = fraudseq.simulate(accounts=120, days=30, seed=5)
    model_dir = tmp_path_factory.mktemp("hardening") / "model"
    model = fraudseq.FraudModel("xgboost", n_estimators=10)
    model.fit(frame, train_until="2026-01-24").save(model_dir)
    rows = frame[frame.ts >= "2026-01-24"].head(200)
    txs = [
        {
            "tx_id": r.tx_id,
            "card_id": r.card_id,
            "ts": r.ts.isoformat(),
            "amount": float(r.amount),
            **{c: getattr(r, c) for c in ("mcc", "country", "channel", "device_id", "merchant_id")},
        }
        for r in rows.itertuples()
    ]
    return model_dir, txs


def test_redis_down_behind_a_password_shows_it_nowhere(real_model, caplog):
    pytest.importorskip("redis")
    from fraudseq.serving import Detector
    from fraudseq.serving.state_redis import RedisStore

    model_dir, txs = real_model
    detector = Detector.load(model_dir, "memory", clock="data")  # January 2026 data
    detector.store = RedisStore(REDIS_URL)  # connects on first use: nothing listens there
    with TestClient(create_app(detector)) as client, caplog.at_level(logging.INFO):
        response = client.post("/v1/score", json=txs[0])
        batch = client.post("/v1/score/batch", json={"transactions": txs[:3]})
        ready = client.get("/readyz")
        metrics = client.get("/metrics").text
    detector.close()
    assert response.status_code == batch.status_code == 503
    assert response.headers["retry-after"] == "1" and response.json()["permanent"] is False
    assert ready.status_code == 503
    assert_no_secret(response.text, batch.text, ready.text, metrics, caplog.text)
    assert "redis://" not in response.text + batch.text + ready.text
    logged = error_records(caplog, response.json()["error_id"])
    assert "redis://default:***@127.0.0.1:1/0: Redis unavailable" in logged[0].getMessage()


#: The transactions are from January 2026: the detector replays them on the data clock.
DATA_CLOCK = {"clock": "data"}


def score_some(model_dir: Path, url: str, txs: list[dict]) -> None:
    from fraudseq.serving import Detector

    with Detector.load(model_dir, url, clock="data") as detector:  # January 2026 data
        detector.explain = "none"
        for one in txs:
            detector.score(one)
        detector.store.checkpoint()


def test_a_damaged_sqlite_file_is_a_permanent_fault(real_model, tmp_path, caplog):
    model_dir, txs = real_model
    path = tmp_path / "state.db"
    score_some(model_dir, f"sqlite:///{path}", txs[:60])
    with sqlite3.connect(path) as db:
        roots = dict(db.execute("SELECT name, rootpage FROM sqlite_master"))
        page = db.execute("PRAGMA page_size").fetchone()[0]
    db.close()
    with path.open("r+b") as file:  # damage the pages of the accounts and transactions
        for table in ("accounts", "transactions"):
            file.seek((roots[table] - 1) * page)
            file.write(b"\xa5" * page)
    app = create_app(model_dir=model_dir, state=f"sqlite:///{path}", detector_options=DATA_CLOCK)
    with TestClient(app) as client, caplog.at_level(logging.INFO):
        assert client.get("/readyz").status_code == 200  # SELECT 1 cannot see damaged pages
        response = client.post("/v1/score", json=txs[100])
        ready = client.get("/readyz")
    assert response.status_code == 503, response.text
    assert "retry-after" not in response.headers
    body = response.json()
    assert body["permanent"] is True and "operator" in body["message"]
    assert str(tmp_path) not in response.text and "malformed" not in response.text
    logged = error_records(caplog, body["error_id"])
    assert "database disk image is malformed" in logged[0].getMessage()
    assert "permanent" in logged[0].getMessage()
    assert ready.status_code == 503 and ready.json()["store"]["error_id"] == body["error_id"]


def test_a_full_disk_is_transient_and_readyz_follows_it(real_model, tmp_path, caplog):
    model_dir, txs = real_model
    path = tmp_path / "state.db"
    app = create_app(model_dir=model_dir, state=f"sqlite:///{path}", detector_options=DATA_CLOCK)
    with TestClient(app) as client, caplog.at_level(logging.INFO):
        db = app.state.serving.detector.store._db
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        db.execute(f"PRAGMA max_page_count = {pages}")  # no room to grow: SQLITE_FULL
        response = client.post("/v1/score/batch", json={"transactions": txs[:80]})
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"] == "1"
        body = response.json()
        assert body["permanent"] is False and str(tmp_path) not in response.text
        assert "disk is full" in error_records(caplog, body["error_id"])[0].getMessage()
        assert client.get("/readyz").status_code == 503
        db.execute(f"PRAGMA max_page_count = {10 * pages + 10_000}")  # space freed
        retry = client.post("/v1/score/batch", json={"transactions": txs[:80]})
        assert retry.status_code == 200, retry.text
        assert client.get("/readyz").status_code == 200


def test_a_read_only_sqlite_file_is_a_permanent_fault(real_model, tmp_path, caplog):
    model_dir, txs = real_model
    path = tmp_path / "state.db"
    app = create_app(model_dir=model_dir, state=f"sqlite:///{path}", detector_options=DATA_CLOCK)
    with TestClient(app) as client, caplog.at_level(logging.INFO):
        store = app.state.serving.detector.store
        writable = store._db
        store._db = sqlite3.connect(
            f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
        )
        response = client.post("/v1/score", json=txs[0])
        store._db.close()
        store._db = writable
    assert response.status_code == 503 and "retry-after" not in response.headers
    assert response.json()["permanent"] is True
    logged = error_records(caplog, response.json()["error_id"])[0].getMessage()
    assert "read-only" in logged and "readonly" in logged


def test_a_locked_sqlite_file_is_transient(real_model, tmp_path):
    from fraudseq.serving import Detector
    from fraudseq.serving.state_sqlite import SQLiteStore

    model_dir, txs = real_model
    path = tmp_path / "state.db"
    detector = Detector.load(model_dir, SQLiteStore(path, busy_timeout=0.2), clock="data")
    holder = sqlite3.connect(path, isolation_level=None)
    with TestClient(create_app(detector)) as client:
        holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        locked = client.post("/v1/score", json=txs[0])
        holder.execute("ROLLBACK")
        after = client.post("/v1/score", json=txs[0])
    holder.close()
    detector.close()
    assert locked.status_code == 503 and locked.headers["retry-after"] == "1"
    assert locked.json()["permanent"] is False and str(tmp_path) not in locked.text
    assert after.status_code == 200, after.text


# ------------------------------------------------------------------ slow clients


def test_a_stalled_upload_gets_408_once_the_body_deadline_passes():

    app = create_app(FakeDetector(), body_timeout=0.3)
    sent: list[dict] = []

    async def receive():
        if not sent and not getattr(receive, "started", False):
            receive.started = True
            return {"type": "http.request", "body": b'{"tx_id": ', "more_body": True}
        await asyncio.sleep(3600)  # the client stalls

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/score",
        "raw_path": b"/v1/score",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"1000")],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }
    started = time.monotonic()
    asyncio.run(asyncio.wait_for(app(scope, receive, send), 5))
    assert time.monotonic() - started < 2
    assert sent[0]["status"] == 408
    assert (b"connection", b"close") in sent[0]["headers"]
    assert b"not received within 0.3 s" in sent[1]["body"]


@pytest.fixture
def limited_server():
    """The fake detector's app on uvicorn with fraudseq's protocol, in a thread: header
    deadline 0.5 s, body deadline 1 s, keep-alive 30 s (so only the deadlines close)."""

    import uvicorn

    from fraudseq.http_limits import protocol

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = uvicorn.Config(
        create_app(FakeDetector(), body_timeout=1),
        host="127.0.0.1",
        port=port,
        http=protocol(0.5),
        timeout_keep_alive=30,
        log_level="warning",
        lifespan="on",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    yield port
    server.should_exit = True
    thread.join(10)


def reply(sock, timeout: float = 3.0) -> bytes:
    """What the server sends until it closes the connection (or `timeout` passes)."""

    sock.settimeout(0.2)
    data, deadline = b"", time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except OSError:
            break
        if not chunk:
            return data  # closed by the server
        data += chunk
    raise AssertionError(f"the connection is still open after {timeout}s: {data[:200]!r}")


def test_the_server_closes_slow_and_oversized_requests(limited_server):

    port = limited_server

    def connect(payload: bytes = b"") -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", port))
        if payload:
            sock.sendall(payload)
        return sock

    body = json.dumps(tx(1)).encode()
    request = (
        b"POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    partial = connect(b"POST /v1/score HTTP/1.1\r\nHost: x\r\n")  # slowloris
    idle = connect()  # connects, sends nothing
    stalled = connect(request[: request.index(b"\r\n\r\n") + 4] + body[:10])
    kept_alive = connect(request)  # one request, then part of the next one's headers
    huge = connect(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000)
    with partial, idle, stalled, kept_alive, huge:
        assert reply(huge).startswith(b"HTTP/1.1 431 ")
        first = kept_alive.recv(65536)
        assert first.startswith(b"HTTP/1.1 200 "), first
        kept_alive.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        for sock in (partial, idle, kept_alive):
            answer = reply(sock)
            assert answer.startswith(b"HTTP/1.1 408 ") and b"headers" in answer, answer
        answer = reply(stalled)
        assert answer.startswith(b"HTTP/1.1 408 ") and b"body" in answer, answer
    # The server still serves everyone else.
    with connect(request) as ok:
        assert ok.recv(65536).startswith(b"HTTP/1.1 200 ")
