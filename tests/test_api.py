"""The HTTP API: validation built from the schema, API key, limits, metrics, readiness.

Most tests use a small fake detector injected into create_app; the end-to-end tests at
the bottom use the real Detector on a small XGBoost model.
"""

import json
import logging
from collections import Counter, defaultdict

import pytest
from fastapi.testclient import TestClient

from fraudseq.errors import DataValidationError, FraudseqError
from fraudseq.schema import Schema
from fraudseq.serving import ConflictError, StateStoreError, UnknownTransactionError
from fraudseq.serving.http.app import create_app, read_model_schema, redact_state_url
from fraudseq.serving.http.settings import ServeSettings, resolve_api_key

SCHEMA = Schema.simulator()
KEY = "s3cret-key-for-tests"


class FakeDetector:
    """The Detector interface with a trivial model: probability = amount / 1000."""

    model_version = "fake-1"

    def __init__(self, schema: Schema = SCHEMA) -> None:
        self.schema = schema
        self.results: dict[str, dict] = {}
        self.sent: dict[str, dict] = {}
        self.events: dict[str, int] = defaultdict(int)
        self.labels: dict[str, int] = {}
        self.store_up = True
        self.closed = False
        self.calls: list[dict] = []
        self.counts: Counter = Counter(scored=0, replayed=0, alerts=0)

    def score(self, tx: dict) -> dict:
        self.calls.append(tx)
        tid = tx[self.schema.id_column]
        if tid in self.sent:
            if self.sent[tid] != tx:
                raise ConflictError(f"transaction id {tid!r} was already scored with other content")
            self.counts["replayed"] += 1
            return self.results[tid]
        amount = tx[self.schema.amount]
        if amount == 666:
            raise RuntimeError("secret internal detail /etc/passwd")
        if amount == 777:
            return {"transaction_id": tid, "fraud_probability": float("nan")}
        if amount == 13:
            raise DataValidationError(f"{self.schema.amount}: 13 is unlucky")
        if amount == 503:
            raise StateStoreError("state.db: SQLite error: database or disk is full")
        entity = tuple(tx[c] for c in self.schema.entity_parts)
        self.events[entity] += 1
        probability = min(1.0, abs(amount) / 1000)
        result = {
            "transaction_id": tid,
            "fraud_probability": probability,
            "score": round(100 * probability, 2),
            "alert": probability >= 0.5,
            "threshold": 0.5,
            "insufficient_history": self.events[entity] <= 3,
            "out_of_order": False,
            "model_version": self.model_version,
            "reasons": [],
        }
        self.sent[tid], self.results[tid] = tx, result
        self.counts["scored"] += 1
        self.counts["alerts"] += result["alert"]
        return result

    def score_batch(self, txs: list[dict]) -> list[dict]:
        return [self.score(tx) for tx in txs]

    def feedback(self, transaction_id: str, label: int) -> dict:
        if transaction_id not in self.results:
            raise UnknownTransactionError(f"unknown transaction id {transaction_id!r}")
        self.labels[transaction_id] = label
        return {"transaction_id": transaction_id, "label": label, "status": "recorded"}

    def ready(self) -> bool:
        if self.store_up is None:
            raise OSError("connection refused by 10.0.0.5:5432")
        return self.store_up

    def close(self) -> None:
        self.closed = True


def tx(i: int = 1, **changes) -> dict:
    out = {
        "tx_id": f"T{i:08d}",
        "card_id": "C000001",
        "ts": f"2026-02-01T10:{i % 60:02d}:00",
        "amount": 42.5,
        "mcc": "5411",
        "country": "FR",
        "channel": "pos",
        "device_id": "D1",
        "merchant_id": "M00001",
    }
    out.update(changes)
    return {k: v for k, v in out.items() if v is not ...}


@pytest.fixture
def detector():
    return FakeDetector()


@pytest.fixture
def client(detector):
    with TestClient(create_app(detector, max_batch=5)) as c:
        yield c


def assert_clean(response) -> None:
    """No stack trace or internal detail in an error body."""
    text = response.text
    for leak in ("Traceback", 'File "', "secret internal detail", "10.0.0.5", "Error:"):
        assert leak not in text, text


# ------------------------------------------------------------------ happy paths


def test_score_returns_the_detector_fields(client, detector):
    response = client.post("/v1/score", json=tx(1, amount=900.0))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["transaction_id"] == "T00000001"
    assert body["alert"] is True and body["score"] == 90.0
    assert set(body) >= {
        "transaction_id",
        "fraud_probability",
        "score",
        "alert",
        "threshold",
        "insufficient_history",
        "model_version",
        "reasons",
    }
    sent = detector.calls[-1]
    assert sent["amount"] == 900.0 and sent["card_id"] == "C000001"


def test_time_is_normalised_to_naive_utc_and_missing_categories_are_none(client, detector):
    body = tx(1, ts="2026-02-01T12:00:00+02:00", device_id=None, merchant_id=...)
    assert client.post("/v1/score", json=body).status_code == 200
    sent = detector.calls[-1]
    assert sent["ts"] == "2026-02-01T10:00:00"
    assert sent["device_id"] is None and sent["merchant_id"] is None
    assert "is_fraud" not in sent and "fraud_type" not in sent
    assert client.post("/v1/score", json=tx(2, ts="2026-02-01T10:00:00Z")).status_code == 200
    assert detector.calls[-1]["ts"] == "2026-02-01T10:00:00"


def test_batch_scores_in_order(client):
    response = client.post("/v1/score/batch", json={"transactions": [tx(i) for i in range(5)]})
    assert response.status_code == 200, response.text
    ids = [r["transaction_id"] for r in response.json()["results"]]
    assert ids == [f"T{i:08d}" for i in range(5)]
    assert client.post("/v1/score/batch", json={"transactions": []}).json() == {"results": []}


def test_health_and_openapi(client):
    assert client.get("/healthz").json()["status"] == "ok"
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["model_version"] == "fake-1"
    spec = client.get("/openapi.json").json()
    assert {"/v1/score", "/v1/score/batch", "/v1/feedback", "/healthz", "/readyz"} <= set(
        spec["paths"]
    )
    transaction = spec["components"]["schemas"]["Transaction"]
    assert set(transaction["required"]) == {"tx_id", "card_id", "ts", "amount"}
    for name in ("tx_id", "card_id"):  # a string or an integer, read as its digits
        kinds = [s["type"] for s in transaction["properties"][name]["anyOf"]]
        assert kinds == ["string", "integer"]
    # No [time] table: the time is an ISO 8601 string only.
    assert transaction["properties"]["ts"]["type"] == "string"
    assert "1678-2261" in transaction["properties"]["ts"]["description"]
    assert transaction["properties"]["ts"]["pattern"].startswith("^")
    result = spec["components"]["schemas"]["ScoreResult"]
    assert "out_of_order" in result["required"]
    assert result["properties"]["out_of_order"]["type"] == "boolean"
    assert "mcc" in transaction["properties"] and "is_fraud" not in transaction["properties"]
    assert transaction["additionalProperties"] is False
    assert client.get("/docs").status_code == 200


# ------------------------------------------------------------------ validation

CASES = [
    # (id, body changes or raw body, field, words in the message)
    ("amount NaN token", '{"amount": NaN}', "amount", "finite"),
    ("amount Infinity token", '{"amount": Infinity}', "amount", "finite"),
    ("amount -Infinity token", '{"amount": -Infinity}', "amount", "finite"),
    ("amount overflow", '{"amount": 1e999}', "amount", "finite"),
    ("amount out of range", {"amount": 1e300}, "amount", "less than 1000000000000000"),
    ("amount out of range below", {"amount": -1e15}, "amount", "greater than -1000000000000000"),
    ("amount as text", {"amount": "12.5"}, "amount", "number"),
    ("amount bool", {"amount": True}, "amount", "number"),
    ("amount missing", {"amount": ...}, "amount", "missing"),
    ("id as float", {"tx_id": 1.5}, "tx_id", "a string or an integer"),
    ("id as integral float", {"tx_id": 123.0}, "tx_id", "a string or an integer"),
    ("id as bool", {"tx_id": True}, "tx_id", "a string or an integer"),
    ("id with a tab", {"tx_id": "T\t1"}, "tx_id", "control characters"),
    ("entity as float", {"card_id": 4.5}, "card_id", "a string or an integer"),
    ("id empty", {"tx_id": ""}, "tx_id", "at least 1"),
    ("id too long", {"tx_id": "x" * 129}, "tx_id", "at most 128"),
    ("entity newline", {"card_id": "C1\nX"}, "card_id", "control characters"),
    ("entity NUL", {"card_id": "C1\u0000"}, "card_id", "control characters"),
    ("entity blank", {"card_id": "   "}, "card_id", "blank"),
    ("entity null", {"card_id": None}, "card_id", "string"),
    ("time unparseable", {"ts": "yesterday"}, "ts", "ISO 8601"),
    ("time as epoch number", {"ts": 1767225600}, "ts", "add a [time] table"),
    ("time as bool", {"ts": True}, "ts", "ISO 8601"),
    ("time too long", {"ts": "2026-01-01" + " " * 60}, "ts", "at most 64"),
    ("time out of range", {"ts": "1500-01-01T00:00:00"}, "ts", "1678-2261"),
    ("categorical as float", {"mcc": 54.5}, "mcc", "string or an integer"),
    ("categorical as bool", {"mcc": True}, "mcc", "string or an integer"),
    ("categorical too long", {"country": "x" * 257}, "country", "at most 256"),
    ("unknown field", {"colour": "red"}, "colour", "unknown field"),
    ("typo", {"amout": 1.0}, "amout", "did you mean 'amount'"),
    ("label not allowed", {"is_fraud": 1}, "is_fraud", "/v1/feedback"),
    ("scenario not allowed", {"fraud_type": "none"}, "fraud_type", "/v1/feedback"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_invalid_transactions_get_422_naming_field_and_reason(client, detector, case):
    _, change, field, words = case
    if isinstance(change, str):  # raw JSON: tokens that json.dumps would not write
        body = json.dumps(tx(1, amount=...))[:-1] + ", " + change[1:]
        response = client.post(
            "/v1/score", content=body, headers={"content-type": "application/json"}
        )
    else:
        response = client.post("/v1/score", json=tx(1, **change))
    assert response.status_code == 422, response.text
    errors = response.json()["errors"]
    assert [e["field"] for e in errors] == [field], errors
    assert words in errors[0]["msg"], errors
    assert field in response.json()["message"] and words in response.json()["message"]
    assert_clean(response)
    assert detector.calls == []


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ('{"tx_id": "T1", ', "malformed JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('"a string"', "must be a JSON object"),
        ("", "request body is required"),
        ("not json at all", "malformed JSON"),
    ],
)
def test_malformed_bodies(client, body, words):
    response = client.post("/v1/score", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert words in response.json()["message"]
    assert_clean(response)


def test_non_json_content_type_is_415(client, detector):
    body = json.dumps(tx(1))
    for headers in ({"content-type": "text/plain"}, {}):
        response = client.post("/v1/score", content=body, headers=headers)
        assert response.status_code == 415 and "application/json" in response.json()["message"]
    ok = client.post("/v1/score", content=body, headers={"content-type": "application/json; x=1"})
    assert ok.status_code == 200


def test_no_input_is_echoed_in_errors(client):
    response = client.post("/v1/score", json=tx(1, card_id="<script>alert(1)</script>\n"))
    assert response.status_code == 422
    assert "<script>" not in response.text


def test_batch_limit_and_item_paths(client, detector):
    response = client.post("/v1/score/batch", json={"transactions": [tx(i) for i in range(6)]})
    assert response.status_code == 422
    message = response.json()["message"]
    assert "6 in one request" in message and "limit is 5" in message
    assert detector.calls == []

    items = [tx(1), tx(2, amount="x"), tx(3, nope=1)]
    response = client.post("/v1/score/batch", json={"transactions": items})
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == [
        "transactions[1].amount",
        "transactions[2].nope",
    ]
    assert detector.calls == []
    response = client.post("/v1/score/batch", json={"transactions": [tx(1)], "extra": 1})
    assert response.status_code == 422 and response.json()["errors"][0]["field"] == "extra"


def test_body_size_limit_returns_413_before_parsing(detector):
    app = create_app(detector, max_batch=5, max_body_bytes=2000)
    with TestClient(app) as client:
        big = json.dumps({"transactions": [tx(i) for i in range(5)]}) + " " * 2000
        response = client.post(
            "/v1/score/batch", content=big, headers={"content-type": "application/json"}
        )
        assert response.status_code == 413
        assert "limit of 2000 bytes" in response.json()["message"]

        def chunks():  # no Content-Length: chunked transfer
            for _ in range(10):
                yield b" " * 500

        response = client.post(
            "/v1/score", content=chunks(), headers={"content-type": "application/json"}
        )
        assert response.status_code == 413
        small = client.post(
            "/v1/score",
            content=iter([json.dumps(tx(1)).encode()]),
            headers={"content-type": "application/json"},
        )
        assert small.status_code == 200, small.text
    assert detector.calls[-1]["tx_id"] == "T00000001" and len(detector.calls) == 1


# ------------------------------------------------------------------ detector errors


def test_detector_errors_map_to_status_codes(client):
    response = client.post("/v1/score", json=tx(1, amount=13.0))
    assert response.status_code == 422 and "unlucky" in response.json()["message"]
    assert client.post("/v1/score", json=tx(2)).status_code == 200
    assert client.post("/v1/score", json=tx(2)).status_code == 200  # same content: idempotent
    conflict = client.post("/v1/score", json=tx(2, amount=43.0))
    assert conflict.status_code == 409, conflict.text
    assert "already" in conflict.json()["message"]


def test_unexpected_detector_error_is_500_without_trace(client, caplog):
    with caplog.at_level(logging.ERROR, logger="fraudseq.serving"):
        response = client.post("/v1/score", json=tx(1, amount=666.0))
    assert response.status_code == 500
    message = response.json()["message"]
    assert "internal server error" in message and "error id" in message
    assert_clean(response)
    error_id = message.split("error id ")[1].split(")")[0]
    logged = [r for r in caplog.records if error_id in r.getMessage()]
    assert logged and logged[0].exc_info is not None  # the traceback is in the server log


def test_an_integer_category_is_its_digits(client, detector):
    first = client.post("/v1/score", json=tx(1, mcc=5411))
    assert first.status_code == 200, first.text
    assert detector.calls[-1]["mcc"] == "5411"  # as a file's integer column is read
    retry = client.post("/v1/score", json=tx(1, mcc="5411"))
    assert retry.json() == first.json()


def test_a_state_store_failure_is_a_503_to_retry(client):
    response = client.post("/v1/score", json=tx(1, amount=503.0))
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    body = response.json()
    assert "retry later" in body["message"] and body["error_id"] in body["message"]
    assert "disk is full" not in response.text and "state.db" not in response.text  # log only
    assert_clean(response)


def test_a_reply_that_is_not_json_is_a_500(client):
    response = client.post("/v1/score", json=tx(1, amount=777.0))
    assert response.status_code == 500 and "error id" in response.json()["message"]
    assert_clean(response)


def test_state_urls_are_logged_without_passwords():
    assert redact_state_url("redis://user:pw@host:6379/0") == "redis://user:***@host:6379/0"
    assert redact_state_url("sqlite:///state.db") == "sqlite:///state.db"


def test_catch_all_handler_hides_route_failures(detector):
    app = create_app(detector)

    @app.get("/boom")
    async def boom():
        raise KeyError("secret internal detail")

    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/boom")
    assert response.status_code == 500 and "error id" in response.json()["message"]
    assert_clean(response)


def test_not_found_and_method_not_allowed_are_json(client):
    assert client.get("/nope").json() == {"message": "Not Found"}
    assert client.get("/v1/score").status_code == 405


# ------------------------------------------------------------------ feedback


def test_feedback_is_idempotent_and_validated(client, detector):
    client.post("/v1/score", json=tx(1))
    first = client.post("/v1/feedback", json={"transaction_id": "T00000001", "label": 1})
    second = client.post("/v1/feedback", json={"transaction_id": "T00000001", "label": 1})
    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()
    assert detector.labels == {"T00000001": 1}
    for bad in (
        {"transaction_id": "T00000001", "label": 2},
        {"transaction_id": "T00000001", "label": "1"},
        {"transaction_id": "T00000001", "label": True},
        {"transaction_id": "T00000001"},
        {"transaction_id": "", "label": 0},
        {"transaction_id": "T00000001", "label": 0, "why": "chargeback"},
    ):
        response = client.post("/v1/feedback", json=bad)
        assert response.status_code == 422, (bad, response.text)
    unknown = client.post("/v1/feedback", json={"transaction_id": "T404", "label": 0})
    assert unknown.status_code == 404 and "unknown transaction id" in unknown.json()["message"]


# ------------------------------------------------------------------ API key


def test_api_key_required_except_on_health_routes(detector):
    with TestClient(create_app(detector, api_key=KEY)) as client:
        for path in ("/healthz", "/readyz"):
            assert client.get(path).status_code == 200
        missing = client.post("/v1/score", json=tx(1))
        assert missing.status_code == 401 and "missing X-API-Key" in missing.json()["message"]
        wrong = client.post("/v1/score", json=tx(1), headers={"X-API-Key": KEY + "x"})
        assert wrong.status_code == 401 and "invalid API key" in wrong.json()["message"]
        assert detector.calls == []
        assert client.get("/metrics").status_code == 401
        for path in ("/openapi.json", "/docs", "/redoc"):  # the docs page loads the document
            assert client.get(path).status_code == 200, path
        headers = {"X-API-Key": KEY}
        assert client.post("/v1/score", json=tx(1), headers=headers).status_code == 200
        assert client.get("/metrics", headers=headers).status_code == 200
        spec = client.get("/openapi.json", headers=headers).json()
        assert "APIKeyHeader" in spec["components"]["securitySchemes"]
        text = client.get("/metrics", headers=headers).text
        assert 'route="/v1/score",status="401"' in text


def test_api_key_env_must_be_set_and_non_empty(monkeypatch):
    monkeypatch.delenv("FRAUDSEQ_TEST_KEY", raising=False)
    with pytest.raises(FraudseqError, match="FRAUDSEQ_TEST_KEY is not set"):
        resolve_api_key("FRAUDSEQ_TEST_KEY")
    monkeypatch.setenv("FRAUDSEQ_TEST_KEY", "")
    with pytest.raises(FraudseqError, match="FRAUDSEQ_TEST_KEY is empty"):
        resolve_api_key("FRAUDSEQ_TEST_KEY")
    monkeypatch.setenv("FRAUDSEQ_TEST_KEY", "k")
    assert resolve_api_key("FRAUDSEQ_TEST_KEY") == "k"
    assert resolve_api_key(None) is None


# ------------------------------------------------------------------ metrics, readiness


def test_metrics_exposition(client):
    client.post("/v1/score", json=tx(1, amount=900.0))
    client.post("/v1/score", json=tx(2, amount=1.0))
    client.post("/v1/score", json=tx(3, amount="bad"))
    client.post("/v1/score/batch", json={"transactions": [tx(4, amount=800.0), tx(5)]})
    text = client.get("/metrics").text
    assert 'fraudseq_http_requests_total{method="POST",route="/v1/score",status="200"} 2.0' in text
    assert 'fraudseq_http_requests_total{method="POST",route="/v1/score",status="422"} 1.0' in text
    assert 'route="/v1/score/batch",status="200"} 1.0' in text
    assert 'fraudseq_http_request_duration_seconds_bucket{le="0.015",method="POST"' in text
    assert "fraudseq_transactions_scored_total 4.0" in text
    assert "fraudseq_transactions_replayed_total 0.0" in text
    assert "fraudseq_alerts_total 2.0" in text
    assert 'fraudseq_model_info{model_version="fake-1"} 1.0' in text


def test_metrics_count_retries_as_replayed_not_scored(client):
    client.post("/v1/score", json=tx(1, amount=900.0))
    client.post("/v1/score", json=tx(1, amount=900.0))  # a retry of an alert
    client.post("/v1/score/batch", json={"transactions": [tx(1, amount=900.0), tx(2)]})
    text = client.get("/metrics").text
    assert "fraudseq_transactions_scored_total 2.0" in text
    assert "fraudseq_transactions_replayed_total 2.0" in text
    assert "fraudseq_alerts_total 1.0" in text


def test_each_app_has_its_own_registry():
    with TestClient(create_app(FakeDetector())) as a, TestClient(create_app(FakeDetector())) as b:
        a.post("/v1/score", json=tx(1))
        assert "fraudseq_transactions_scored_total 1.0" in a.get("/metrics").text
        assert "fraudseq_transactions_scored_total 0.0" in b.get("/metrics").text


def test_readyz_503_when_store_unreachable(client, detector):
    detector.store_up = False
    response = client.get("/readyz")
    assert response.status_code == 503 and response.json()["status"] == "not ready"
    detector.store_up = None  # ready() raises
    response = client.get("/readyz")
    assert response.status_code == 503
    assert_clean(response)
    assert client.get("/healthz").status_code == 200
    detector.store_up = True
    assert client.get("/readyz").status_code == 200


# ------------------------------------------------------------------ schema-built models


def test_models_follow_an_unusual_schema():
    schema = Schema(
        id="id",
        entity="account number",
        time="when",
        amount="value",
        label="class",
        categorical=("model_config", "json"),
        numeric=("balance",),
    )
    detector = FakeDetector(schema)
    with TestClient(create_app(detector)) as client:
        body = {"id": "1", "account number": "A", "when": "2026-01-01", "value": 5}
        body |= {"model_config": "x", "json": "y", "balance": 3}
        response = client.post("/v1/score", json=body)
        assert response.status_code == 200, response.text
        assert detector.calls[-1] == {**body, "when": "2026-01-01T00:00:00", "value": 5.0}
        bad = client.post("/v1/score", json={**body, "id": "2", "balance": "NaN"})
        assert bad.json()["errors"][0]["field"] == "balance"
        bad = client.post("/v1/score", json={**body, "id": "2", "class": 0})
        assert "/v1/feedback" in bad.json()["message"]
        assert (
            client.post("/v1/score", json={**body, "id": "3", "balance": None}).status_code == 200
        )


def test_lifespan_loads_and_closes_the_detector(tmp_path, monkeypatch):
    (tmp_path / "model.json").write_text(json.dumps({"schema": SCHEMA.to_dict()}))
    loaded = []

    def fake_load(model_dir, state, options, reasons):
        loaded.append((model_dir, state, options, reasons))
        return FakeDetector()

    monkeypatch.setattr("fraudseq.serving.http.app._load_detector", fake_load)
    app = create_app(
        model_dir=tmp_path, state="sqlite:///x.db", detector_options={"ttl_seconds": 5}
    )
    with TestClient(app) as client:
        assert client.get("/readyz").status_code == 200
        assert client.post("/v1/score", json=tx(1)).status_code == 200
        detector = app.state.serving.detector
    assert loaded == [(str(tmp_path), "sqlite:///x.db", {"ttl_seconds": 5}, None)]
    assert detector.closed


def test_model_dir_without_model_json_is_refused(tmp_path):
    with pytest.raises(FraudseqError, match="not a model directory"):
        create_app(model_dir=tmp_path)
    assert read_model_schema  # imported for the end-to-end tests


def test_settings_round_trip_through_the_environment(monkeypatch):
    settings = ServeSettings(
        model_dir="m", state="sqlite:///s.db", api_key_env="K", ttl_seconds=9, reasons="none"
    )
    assert ServeSettings.from_env(settings.to_env()) == settings
    assert "s3cret" not in json.dumps(settings.to_env())


# ------------------------------------------------------------------ the real Detector


@pytest.fixture(scope="module")
def real_model(served_xgboost):
    model_dir, frame = served_xgboost
    return model_dir, frame[frame.ts >= "2026-01-20"].head(120)


def as_json(row, offset_hours: int = 0) -> dict:
    from datetime import timedelta, timezone

    ts = row.ts.to_pydatetime()
    if offset_hours:
        ts = (ts + timedelta(hours=offset_hours)).replace(
            tzinfo=timezone(timedelta(hours=offset_hours))
        )
    out = {"tx_id": row.tx_id, "card_id": row.card_id, "ts": ts.isoformat(), "amount": row.amount}
    return out | {c: getattr(row, c) for c in SCHEMA.categorical}


def test_real_detector_over_http_matches_direct_scores(real_model, tmp_path):
    from fraudseq.serving import Detector

    model_dir, rows = real_model
    app = create_app(
        model_dir=model_dir,
        state=f"sqlite:///{tmp_path / 'state.db'}",
        detector_options={"clock": "data"},  # January 2026 data
    )
    direct = Detector.load(model_dir, "memory", clock="data")
    txs = list(rows.itertuples())
    with TestClient(app) as client:
        assert client.get("/readyz").status_code == 200
        # Half one at a time with +02:00 offsets, half as one batch in UTC.
        over_http = [client.post("/v1/score", json=as_json(r, 2)).json() for r in txs[:60]]
        batch = client.post(
            "/v1/score/batch", json={"transactions": [as_json(r) for r in txs[60:]]}
        )
        assert batch.status_code == 200, batch.text
        over_http += batch.json()["results"]
        expected = json.loads(json.dumps([direct.score(as_json(r)) for r in txs]))
        # The vectorised batch sums amounts with prefix sums: equal to 1e-6, not bit for bit.
        for got, want in zip(over_http, expected, strict=True):
            assert got["fraud_probability"] == pytest.approx(want["fraud_probability"], abs=1e-9)
            assert {**got, "fraud_probability": 0} == {**want, "fraud_probability": 0}

        replay = client.post("/v1/score", json=as_json(txs[0]))  # same instant in UTC
        assert replay.status_code == 200 and replay.json() == over_http[0]
        changed = client.post("/v1/score", json={**as_json(txs[0]), "amount": 1.0})
        assert changed.status_code == 409 and "different content" in changed.json()["message"]

        label = {"transaction_id": txs[0].tx_id, "label": 1}
        first, second = (client.post("/v1/feedback", json=label) for _ in range(2))
        assert first.status_code == second.status_code == 200
        assert second.json()["label"] == 1 and second.json()["changed"] is False
        unknown = client.post("/v1/feedback", json={"transaction_id": "nope", "label": 0})
        assert unknown.status_code == 404 and "never scored" in unknown.json()["message"]

        body = json.dumps({**as_json(txs[1]), "amount": 0.0}).replace("0.0", "Infinity")
        bad = client.post("/v1/score", content=body, headers={"content-type": "application/json"})
        assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "amount"
        text = client.get("/metrics").text
        assert f'fraudseq_model_info{{model_version="{direct.model_version}"}} 1.0' in text
    direct.close()


def test_a_detector_without_the_interface_is_refused_when_the_app_is_made():
    class Uncounted:  # the Detector's methods, without `counts`
        def __init__(self) -> None:
            self._inner = FakeDetector()

        def __getattr__(self, name):
            if name == "counts":
                raise AttributeError(name)
            return getattr(self._inner, name)

    with pytest.raises(TypeError, match="lacks counts of the Detector interface"):
        create_app(Uncounted())


# ------------------------------------------------------------------ every shape of schema


def test_integer_ids_and_entities_are_read_as_their_digits(client, detector):
    """{"tx_id": 123, "card_id": 456} was a 422 ("Input should be a valid string"); files
    read an integer id column as "123", and so does the API now."""
    first = client.post("/v1/score", json=tx(1, tx_id=123, card_id=456))
    assert first.status_code == 200, first.text
    assert first.json()["transaction_id"] == "123"
    sent = detector.calls[-1]
    assert (sent["tx_id"], sent["card_id"]) == ("123", "456")
    retry = client.post("/v1/score", json=tx(1, tx_id="123", card_id="456"))
    assert retry.json() == first.json() and len(detector.sent) == 1  # the same transaction
    batch = client.post("/v1/score/batch", json={"transactions": [tx(2, tx_id=-7, card_id=0)]})
    assert batch.status_code == 200 and batch.json()["results"][0]["transaction_id"] == "-7"
    feedback = client.post("/v1/feedback", json={"transaction_id": 123, "label": 1})
    assert feedback.status_code == 200 and detector.labels == {"123": 1}
    assert client.post("/v1/feedback", json={"transaction_id": 1.0, "label": 1}).status_code == 422


NO_ID = Schema(entity="card_id", time="ts", amount="amount", label="is_fraud")
STREAM = Schema(id="tx_id", time="ts", amount="amount", numeric=("risk",))
COMPOSITE = Schema(
    id="tx_id", entity=("card1", "addr1"), time="ts", amount="amount", categorical=("mcc",)
)
HOURS = Schema(
    id="tx_id", entity="card_id", time="step", amount="amount", time_unit="h",
    time_origin="2026-01-01",
)  # fmt: skip


def shape_client(schema: Schema):
    detector = FakeDetector(schema)
    return detector, TestClient(create_app(detector, max_batch=5))


def test_request_fields_without_an_id_column():
    """The model's data had no id column (ids were row numbers): a request's id is the
    field transaction_id."""
    detector, client = shape_client(NO_ID)
    with client:
        body = {"transaction_id": 5, "card_id": "C1", "ts": "2026-01-01", "amount": 1.0}
        response = client.post("/v1/score", json=body)
        assert response.status_code == 200, response.text
        assert detector.calls[-1]["transaction_id"] == "5"
        missing = client.post(
            "/v1/score", json={k: v for k, v in body.items() if k != "transaction_id"}
        )
        assert missing.json()["errors"][0]["field"] == "transaction_id"
        typo = client.post("/v1/score", json={**body, "tx_id": "T"})
        assert "allowed fields: transaction_id, card_id, ts, amount" in typo.json()["message"]
        spec = client.get("/openapi.json").json()["components"]["schemas"]["Transaction"]
        assert spec["required"] == ["transaction_id", "card_id", "ts", "amount"]


def test_request_fields_of_one_stream():
    """No entity: the data is one stream; there is no entity field to send."""
    detector, client = shape_client(STREAM)
    with client:
        body = {"tx_id": "T1", "ts": "2026-01-01T00:00:00", "amount": 1.0, "risk": None}
        assert client.post("/v1/score", json=body).status_code == 200
        extra = client.post("/v1/score", json={**body, "tx_id": "T2", "stream": "all"})
        assert extra.status_code == 422 and extra.json()["errors"][0]["field"] == "stream"
        spec = client.get("/openapi.json").json()["components"]["schemas"]["Transaction"]
        assert spec["required"] == ["tx_id", "ts", "amount"]


def test_request_fields_of_a_composite_entity():
    """Each part of a composite key is a required field, a string, an integer or null."""
    detector, client = shape_client(COMPOSITE)
    with client:
        body = {"tx_id": "T1", "card1": 1234, "addr1": None, "ts": "2026-01-01", "amount": 1.0}
        response = client.post("/v1/score", json=body)
        assert response.status_code == 200, response.text
        assert (detector.calls[-1]["card1"], detector.calls[-1]["addr1"]) == ("1234", None)
        missing = client.post("/v1/score", json={k: v for k, v in body.items() if k != "addr1"})
        error = missing.json()["errors"][0]
        assert error["field"] == "addr1" and "send null when it is unknown" in error["msg"]
        bad = client.post("/v1/score", json={**body, "card1": 12.5})
        assert bad.json()["errors"][0]["field"] == "card1"
        spec = client.get("/openapi.json").json()["components"]["schemas"]["Transaction"]
        assert spec["required"] == ["tx_id", "card1", "addr1", "ts", "amount"]
        assert {"type": "null"} in spec["properties"]["addr1"]["anyOf"]
        assert "card1+addr1" not in spec["properties"]


def test_a_numeric_time_needs_the_time_table():
    """With a [time] table a number is a time in its unit (passed on for `numeric_times`);
    an ISO string still works; numbers out of range and booleans are refused."""
    detector, client = shape_client(HOURS)
    with client:
        body = {"tx_id": "T1", "card_id": "C1", "step": 36, "amount": 1.0}
        response = client.post("/v1/score", json=body)
        assert response.status_code == 200, response.text
        assert detector.calls[-1]["step"] == 36
        iso = client.post("/v1/score", json={**body, "tx_id": "T2", "step": "2026-01-02T12:00Z"})
        assert iso.status_code == 200 and detector.calls[-1]["step"] == "2026-01-02T12:00:00"
        assert (
            client.post("/v1/score", json={**body, "tx_id": "T3", "step": 1.5}).status_code == 200
        )
        cases = ((1e30, "years 1678-2261"), (10**400, "years"), (True, "or a number of 'h'"))
        for bad, words in (*cases, ("x", "ISO")):
            response = client.post("/v1/score", json={**body, "tx_id": "T4", "step": bad})
            assert response.status_code == 422, response.text
            assert words in response.json()["errors"][0]["msg"]
        spec = client.get("/openapi.json").json()["components"]["schemas"]["Transaction"]
        step = spec["properties"]["step"]
        number = next(s for s in step["anyOf"] if s["type"] == "number")
        low, high = number["minimum"], number["maximum"]  # hours since 2026-01-01: 1678-2261
        assert -3.1e6 < low < -3.05e6 and 2.05e6 < high < 2.1e6
        assert "2026-01-01" in step["description"] and "'h'" in step["description"]
