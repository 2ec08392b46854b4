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
import re
import socket
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fraudseq.serving import StateStoreError
from fraudseq.serving.http import app as api_module
from fraudseq.serving.http.app import create_app, redact_state_url
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
def real_model(tiny_xgboost):
    model_dir, frame = tiny_xgboost
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
    from fraudseq.serving.stores.redis import RedisStore

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
    from fraudseq.serving.stores.sqlite import SQLiteStore

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


def whole_response(sock) -> bytes:
    """One response with a Content-Length, read whole (the connection stays open)."""
    sock.settimeout(5)
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"content-length: (\d+)", head, re.IGNORECASE)[1])
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


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
        first = whole_response(kept_alive)
        assert first.startswith(b"HTTP/1.1 200 "), first
        kept_alive.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        for sock in (partial, idle, kept_alive):
            answer = reply(sock)
            assert answer.startswith(b"HTTP/1.1 408 ") and b"headers" in answer, answer
        answer = reply(stalled)
        assert answer.startswith(b"HTTP/1.1 408 ") and b"body" in answer, answer
    # The server still serves everyone else.
    with connect(request) as ok:
        assert whole_response(ok).startswith(b"HTTP/1.1 200 ")


def test_a_large_body_sent_with_its_headers_is_not_taken_for_headers(limited_server):
    """A batch of 1,000 is ~200 KB: headers and body often arrive in one read, and only
    the bytes before the end of the headers count against the header limit."""
    body = json.dumps({"transactions": [tx(i) for i in range(800)]}).encode()
    assert len(body) > 100_000
    request = (
        b"POST /v1/score/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    with socket.create_connection(("127.0.0.1", limited_server)) as sock:
        sock.sendall(request)
        answer = whole_response(sock)
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:300]


# ------------------------------------------------------------------ text fields and times

CONTROL = ["\t", "\n", "\r", "\x00", "\x1b[31m", "\x7f", "\x85", "\x9b"]


@pytest.mark.parametrize("field", ["tx_id", "card_id", "mcc", "country", "channel", "merchant_id"])
def test_control_characters_are_refused_in_every_text_field(field):
    detector = FakeDetector()
    with TestClient(create_app(detector)) as client:
        for i, char in enumerate(CONTROL):
            response = client.post("/v1/score", json=tx(i, **{field: f"A{char}B"}))
            assert response.status_code == 422, (field, char, response.text)
            (error,) = response.json()["errors"]
            assert error["field"] == field and "control characters" in error["msg"]
        batch = client.post("/v1/score/batch", json={"transactions": [tx(9, **{field: "x\ty"})]})
        assert batch.json()["errors"][0]["field"] == f"transactions[0].{field}"
        assert client.post("/v1/score", json=tx(20, **{field: "Zürich ✓ 東京"})).status_code == 200
    assert all("\t" not in str(v) for call in detector.calls for v in call.values())


def test_control_characters_are_refused_in_entity_parts_and_feedback():
    from fraudseq.schema import Schema

    schema = Schema(id="tx_id", entity=("card1", "addr1"), time="ts", amount="amount")
    with TestClient(create_app(FakeDetector(schema))) as client:
        body = {"tx_id": "T1", "card1": "C1", "addr1": "A\x1b1", "ts": "2026-01-01", "amount": 1}
        response = client.post("/v1/score", json=body)
        assert response.status_code == 422 and response.json()["errors"][0]["field"] == "addr1"
        feedback = client.post("/v1/feedback", json={"transaction_id": "T\n1", "label": 1})
        assert feedback.status_code == 422
        assert feedback.json()["errors"][0]["field"] == "transaction_id"


TIMES_ACCEPTED = [
    "2026-01-31",
    "2026-01-31T13:45",
    "2026-01-31 13:45:00",
    "2026-01-31T13:45:00.123456789",
    "2026-01-31T13:45:00Z",
    "2026-01-31T13:45:00-02:30",
    "1678-01-01T00:30:00-01:00",  # 1678-01-01T01:30 UTC
    "2261-12-31T23:59:59",
    "2261-12-31T23:30:00+01:00",  # 2261-12-31T22:30 UTC
]
#: Times of the pattern's form and years that the service still refuses: no such date, or
#: outside the valid range once the offset is applied (the pattern reads the year as written).
TIMES_MATCHING_BUT_REFUSED = [
    "2026-02-30",
    "1678-01-01T00:30:00+01:00",  # 1677-12-31T23:30 UTC
    "2261-12-31T23:30:00-01:00",  # 2262-01-01T00:30 UTC
]
TIMES_REFUSED = [
    "1677-12-31",
    "2262-01-01",
    "20260131",
    "2026-01-31T13",
    "2026-01-31t13:45",
    "2026-01-31T13:45:00+02",
    " 2026-01-31",
    "2026-01-31\n",
    "٢٠٢٦-01-31",  # Arabic-Indic digits
    *TIMES_MATCHING_BUT_REFUSED,
]


def test_the_documented_time_and_text_patterns_are_what_the_service_accepts():
    """The service accepts exactly the strings the documented patterns match, so the
    document and the service cannot drift apart. JSON Schema patterns are ECMA-262 regular
    expressions, searched; there `$` is the end of the text (in Python it also matches
    before a final newline, hence `\\Z` here)."""

    def ecma(pattern: str) -> re.Pattern:
        assert pattern.endswith("$")
        return re.compile(pattern[:-1] + r"\Z")

    detector = FakeDetector()
    with TestClient(create_app(detector)) as client:
        spec = client.get("/openapi.json").json()["components"]["schemas"]["Transaction"]
        pattern = ecma(spec["properties"]["ts"]["pattern"])
        for i, value in enumerate(TIMES_ACCEPTED + TIMES_REFUSED):
            response = client.post("/v1/score", json=tx(i, ts=value))
            accepted = response.status_code == 200
            assert accepted == (value in TIMES_ACCEPTED), (value, response.text)
            matches = accepted or value in TIMES_MATCHING_BUT_REFUSED
            assert bool(pattern.search(value)) == matches, value
        assert detector.calls[6]["ts"] == "1678-01-01T01:30:00"
        id_pattern = ecma(spec["properties"]["tx_id"]["anyOf"][0]["pattern"])
        text_pattern = ecma(spec["properties"]["mcc"]["anyOf"][0]["anyOf"][0]["pattern"])
        values = ["T1", " T1 ", "\u3000", " ", "", "T\x00", "T\u2028", "\ufeff"]
        for i, value in enumerate(values):
            ok_id = client.post("/v1/score", json=tx(50, tx_id=value)).status_code == 200
            assert ok_id == (value != "" and bool(id_pattern.search(value))), repr(value)
            ok_text = client.post("/v1/score", json=tx(60 + i, mcc=value)).status_code == 200
            assert ok_text == bool(text_pattern.search(value)), repr(value)
        big = client.post("/v1/score", json=tx(52, tx_id=2**53))
        assert big.status_code == 422 and "send a longer one as a string" in big.text


def test_the_time_pattern_accepts_the_years_of_the_valid_time_range():
    """The documented pattern is built from schema.EARLIEST_TIME/LATEST_TIME, not a copy."""
    from fraudseq.schema import EARLIEST_TIME, LATEST_TIME, TIME_YEARS
    from fraudseq.serving.http.requests import TIME_FORMS, TIME_PATTERN

    pattern = re.compile(TIME_PATTERN)
    years = [year for year in range(10000) if pattern.fullmatch(f"{year:04d}-06-15")]
    assert years == list(range(EARLIEST_TIME.year, LATEST_TIME.year + 1))
    assert TIME_YEARS == f"{EARLIEST_TIME.year}-{LATEST_TIME.year}" and TIME_YEARS in TIME_FORMS


def test_a_time_whose_offset_takes_it_out_of_the_valid_range_is_refused():
    """Before: the year was checked as written, so 1678-01-01T00:30+01:00 was accepted and
    passed on as 1677-12-31T23:30 UTC, outside the range files are held to."""
    detector = FakeDetector()
    with TestClient(create_app(detector)) as client:
        for i, value in enumerate(TIMES_MATCHING_BUT_REFUSED[1:]):
            response = client.post("/v1/score", json=tx(i, ts=value))
            assert response.status_code == 422, value
            error = response.json()["errors"][0]
            assert error["field"] == "ts" and "1678-2261 in UTC" in error["msg"], error
            assert value not in response.text  # input values are never echoed
        edge = client.post("/v1/score", json=tx(9, ts="1678-01-01T00:00:00+00:00"))
        assert edge.status_code == 200 and detector.calls[-1]["ts"] == "1678-01-01T00:00:00"
    assert not detector.calls[:-1]


# ------------------------------------------------------------------ the OpenAPI document


def test_the_openapi_document_lists_every_status_the_service_returns():
    with TestClient(create_app(FakeDetector(), api_key="k")) as client:
        spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    body_errors = {"400", "401", "408", "413", "415", "422", "500", "503"}
    for path, extra in (("/v1/score", "409"), ("/v1/score/batch", "409"), ("/v1/feedback", "404")):
        responses = paths[path]["post"]["responses"]
        assert set(responses) == {"200", extra} | body_errors, path
        assert "Retry-After" in responses["503"]["headers"]
        assert responses["422"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ValidationErrorBody"
        }
    metrics = paths["/metrics"]["get"]["responses"]
    assert set(metrics["200"]["content"]) == {"text/plain"}
    assert set(metrics["401"]["content"]) == {"application/json"}
    assert set(paths["/readyz"]["get"]["responses"]) == {"200", "503"}
    assert "HTTPValidationError" not in spec["components"]["schemas"]  # FastAPI's, not ours
    transaction = spec["components"]["schemas"]["Transaction"]["properties"]
    assert "control characters" in transaction["tx_id"]["description"]
    assert "control characters" in transaction["mcc"]["anyOf"][0]["description"]
    assert "1678-2261" in transaction["ts"]["description"]
    # Without a key, no 401 is documented (nor is one returned).
    with TestClient(create_app(FakeDetector())) as client:
        spec = client.get("/openapi.json").json()
    assert "401" not in spec["paths"]["/v1/score"]["post"]["responses"]
    assert "401" not in spec["paths"]["/metrics"]["get"]["responses"]


def test_the_docs_work_with_an_api_key():
    """/docs loads /openapi.json without a way to send the key: both are open, and the
    routes that act on data (and /metrics) still need the key."""
    with TestClient(create_app(FakeDetector(), api_key="k")) as client:
        page = client.get("/docs")
        assert page.status_code == 200 and "/openapi.json" in page.text
        assert client.get("/openapi.json").status_code == 200
        assert client.get("/redoc").status_code == 200
        assert client.post("/v1/score", json=tx(1)).status_code == 401
        assert client.get("/metrics").status_code == 401
        assert client.get("/docs/../metrics").status_code == 401  # no way around it


def test_a_failing_purge_after_a_committed_score_does_not_fail_it(real_model, tmp_path, caplog):
    """The purge runs after the commit: its error is logged and retried later, and the
    request that triggered it still gets its (stored) score."""
    from fraudseq.serving import Detector
    from fraudseq.serving.stores.base import PURGE_EVERY
    from fraudseq.serving.stores.sqlite import SQLiteStore

    model_dir, txs = real_model
    store = SQLiteStore(tmp_path / "state.db")

    def broken_purge():
        raise sqlite3.OperationalError("disk I/O error")

    store.purge = broken_purge
    store._writes = PURGE_EVERY - 1  # the next write purges
    with Detector.load(model_dir, store, clock="data") as detector:
        detector.explain = "none"
        with caplog.at_level(logging.ERROR, "fraudseq"):
            result = detector.score(txs[0])
        assert result["transaction_id"] == txs[0]["tx_id"]
        assert detector.store.record(txs[0]["tx_id"]) is not None
    assert "purging expired state failed" in caplog.text
