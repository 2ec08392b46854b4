"""Shadow scoring (`fraudseq serve CHAMPION --shadow CHALLENGER`) and promote, in-process.

The champion is the `served_xgboost` model, the challenger `tiny_lstm_dir` (the same
simulator schema; another family, encoder and window). See fraudseq.serving.http.shadow.
"""

import json
import logging
import math
import re
import sqlite3
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient

from fraudseq.drift import score_reference
from fraudseq.errors import FraudseqError
from fraudseq.serving import Detector
from fraudseq.serving.http.app import create_app
from fraudseq.serving.http.shadow import (
    RankWindow,
    ShadowOptions,
    shadow_state,
    spearman,
    warm_up,
)
from test_api import KEY, as_json

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: A champion reply with a failing or slow challenger must come within this many seconds
#: (the slow challenger sleeps SLOW_SECONDS per call).
BOUND_SECONDS = 0.5
SLOW_SECONDS = 2.0
KEYED = {"X-API-Key": KEY}


@pytest.fixture(scope="module")
def models(served_xgboost, tiny_lstm_dir):
    """(champion dir, challenger dir, 80 rows of late January 2026 as requests)."""
    champion_dir, frame = served_xgboost
    rows = frame[frame.ts >= "2026-01-20"].head(80)
    return champion_dir, tiny_lstm_dir, [as_json(r) for r in rows.itertuples()]


def load(model_dir, state="memory"):
    return Detector.load(model_dir, state, clock="data")  # January 2026 data


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


def drain(client: TestClient) -> None:
    assert client.app.state.serving.detector._drained(10.0), "the shadow did not finish"


def serve(client: TestClient, txs: list[dict]) -> list[dict]:
    """Half one at a time, half as one batch, then feedback for the first two."""
    half = len(txs) // 2
    replies = [client.post("/v1/score", json=t, headers=KEYED).json() for t in txs[:half]]
    batch = client.post("/v1/score/batch", json={"transactions": txs[half:]}, headers=KEYED)
    assert batch.status_code == 200, batch.text
    for i, label in ((0, 1), (1, 0)):
        body = {"transaction_id": txs[i]["tx_id"], "label": label}
        assert client.post("/v1/feedback", json=body, headers=KEYED).status_code == 200
    return replies + batch.json()["results"]


def tables(path) -> dict[str, list]:
    """A SQLite state file's contents, without write times."""
    queries = {
        "meta": "SELECT key, value FROM meta",
        "accounts": "SELECT entity, state FROM accounts",
        "transactions": "SELECT id, entity, inserted, record FROM transactions",
        "counterparty": "SELECT counterparty, day, n, fraud FROM counterparty_days",
        "labels": "SELECT id, label FROM labels",
    }
    with sqlite3.connect(path) as db:
        return {name: sorted(db.execute(q).fetchall()) for name, q in queries.items()}


def test_replies_state_and_agreement_with_a_shadow(models, tmp_path, caplog):
    champion_dir, challenger_dir, txs = models
    alone = tmp_path / "alone.db"
    with TestClient(create_app(model_dir=champion_dir, state=f"sqlite:///{alone}",
                               detector_options={"clock": "data"})) as client:  # fmt: skip
        expected = serve(client, txs)

    state = tmp_path / "state.db"
    options = ShadowOptions(window=50, every=10)
    app = create_app(
        model_dir=champion_dir,
        state=f"sqlite:///{state}",
        detector_options={"clock": "data"},
        shadow_dir=challenger_dir,
        shadow_options=options,
    )
    with caplog.at_level(logging.INFO, logger="fraudseq.shadow"), TestClient(app) as client:
        assert serve(client, txs) == expected  # only the champion's replies, unchanged
        drain(client)
        text = client.get("/metrics").text
        challenger_version = client.app.state.serving.detector.challenger.model_version

    # The challenger's own namespace: a file next to the champion's, with its own entries.
    shadow_file = tmp_path / f"state.{challenger_version}.db"
    assert shadow_state(f"sqlite:///{state}", challenger_version) == f"sqlite:///{shadow_file}"
    assert tables(state) == tables(alone)  # the champion's state is what it was alone
    theirs = tables(shadow_file)
    assert {row[0] for row in theirs["transactions"]} == {t["tx_id"] for t in txs}
    assert theirs["labels"] == [(txs[0]["tx_id"], 1), (txs[1]["tx_id"], 0)]  # feedback too
    assert theirs["meta"] != tables(state)["meta"]  # another model's features

    # The metrics count what a challenger alone gives.
    with load(challenger_dir) as direct:
        half = len(txs) // 2
        mine = [direct.score(t) for t in txs[:half]] + direct.score_batch(txs[half:])
    ours = np.array([r["alert"] for r in expected])
    theirs_alerts = np.array([r["alert"] for r in mine])
    assert metric(text, "fraudseq_shadow_pairs_total") == len(txs)
    for agreement, count in (
        ("both", ours & theirs_alerts),
        ("champion_only", ours & ~theirs_alerts),
        ("challenger_only", ~ours & theirs_alerts),
    ):
        name = f'fraudseq_shadow_alerts_total{{agreement="{agreement}"}}'
        assert metric(text, name) == count.sum()
    want = spearman(
        np.array([[a["fraud_probability"], b["fraud_probability"]] for a, b in zip(
            expected[-50:], mine[-50:], strict=True)])
    )  # fmt: skip
    assert metric(text, "fraudseq_shadow_rank_correlation") == pytest.approx(want, abs=1e-12)
    assert metric(text, "fraudseq_shadow_window_pairs") == 50
    assert metric(text, 'fraudseq_shadow_errors_total{operation="score"}') == 0
    assert f'fraudseq_shadow_model_info{{model_version="{challenger_version}"}} 1.0' in text

    # One structured line per pair, without the transaction's content.
    lines = [json.loads(r.getMessage()[len("shadow ") :]) for r in caplog.records
             if r.name == "fraudseq.shadow" and r.getMessage().startswith("shadow {")]  # fmt: skip
    assert len(lines) == len(txs)
    assert lines[0]["challenger"]["fraud_probability"] == mine[0]["fraud_probability"]
    assert set(lines[0]) == {"transaction_id", "champion", "challenger"}


class Troubled:
    """A real detector whose scoring fails or sleeps (as a challenger)."""

    def __init__(self, inner, mode: str) -> None:
        self.inner, self.mode = inner, mode

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def _trouble(self, *args):
        if self.mode == "raise":
            raise RuntimeError("challenger exploded: secret internal detail")
        time.sleep(SLOW_SECONDS)
        return self.inner.score(*args)

    score = _trouble


@pytest.mark.parametrize("mode", ["raise", "sleep"])
def test_a_failing_or_slow_challenger_changes_and_delays_nothing(models, mode, caplog):
    champion_dir, challenger_dir, txs = models
    txs = txs[:8]
    with load(champion_dir) as alone:
        expected = json.loads(json.dumps([alone.score(t) for t in txs]))
    with load(champion_dir) as champion, load(challenger_dir) as inner:
        options = ShadowOptions(queue_size=2, timeout=0.5)
        app = create_app(champion, shadow=Troubled(inner, mode), shadow_options=options)
        with TestClient(app) as client:
            client.post("/v1/score", json=txs[0])  # warm up the route (first call imports)
            latencies, replies = [], []
            for t in txs[1:]:
                started = time.perf_counter()
                reply = client.post("/v1/score", json=t)
                latencies.append(time.perf_counter() - started)
                replies.append(reply.json())
            text = client.get("/metrics").text
            client.app.state.serving.detector.stop()
            after = client.get("/metrics").text
    assert replies == expected[1:]
    assert max(latencies) < BOUND_SECONDS, latencies
    errors = metric(after, 'fraudseq_shadow_errors_total{operation="score"}')
    dropped = metric(text, 'fraudseq_shadow_dropped_total{operation="score"}')
    slow = metric(after, 'fraudseq_shadow_slow_calls_total{operation="score"}')
    if mode == "raise":
        assert errors >= 1 and slow == 0
        assert "secret internal detail" not in json.dumps(replies)
        assert any("challenger exploded" in r.getMessage() for r in caplog.records)
    else:  # one call sleeping, two queued: the rest are dropped, none waited for
        assert dropped >= len(txs) - 1 - 3 and slow >= 1 and errors == 0
    # The slow challenger's calls that finished are compared; the failing one's never.
    assert metric(after, "fraudseq_shadow_pairs_total") == (0 if mode == "raise" else slow)


@pytest.fixture(scope="module")
def pair(models):
    champion_dir, challenger_dir, _ = models
    with load(champion_dir) as champion, load(challenger_dir) as challenger:
        yield champion, challenger


def test_promote_swaps_the_models_behind_the_api_key(models, pair):
    champion, challenger = pair
    txs = models[2]
    app = create_app(champion, shadow=challenger, api_key=KEY)
    with TestClient(app) as client:
        assert client.post("/v1/admin/promote").status_code == 401
        assert client.post("/v1/admin/promote", headers={"X-API-Key": "wrong"}).status_code == 401
        assert client.post("/v1/score", json=txs[10], headers=KEYED).json()["model_version"] == (
            champion.model_version
        )
        promoted = client.post("/v1/admin/promote", headers=KEYED)
        assert promoted.status_code == 200, promoted.text
        # the drift gauges now compare the new champion's scores with its own reference
        drift = client.app.state.drift
        expected_edges = score_reference(challenger.model).edges
        np.testing.assert_array_equal(drift.reference.edges, expected_edges)
        assert drift._filled == 0  # the former champion's score left the window
        assert promoted.json() == {
            "status": "promoted",
            "champion": challenger.model_version,
            "challenger": champion.model_version,
        }
        reply = client.post("/v1/score", json=txs[11], headers=KEYED).json()
        assert reply["model_version"] == challenger.model_version
        assert client.get("/readyz").json()["model_version"] == challenger.model_version
        drain(client)
        text = client.get("/metrics", headers=KEYED).text
        assert metric(text, "fraudseq_shadow_promotions_total") == 1
        assert f'fraudseq_model_info{{model_version="{challenger.model_version}"}} 1.0' in text
        assert f'fraudseq_model_info{{model_version="{champion.model_version}"}}' not in text
        assert f'fraudseq_shadow_model_info{{model_version="{champion.model_version}"}}' in text
        # The former champion shadows: it saw the transaction scored after the promote.
        assert champion.store.record(txs[11]["tx_id"]) is not None
        back = client.post("/v1/admin/promote", headers=KEYED).json()
        assert back["champion"] == champion.model_version


def test_promote_needs_a_key_and_a_shadow(pair):
    champion, challenger = pair
    with TestClient(create_app(champion, shadow=challenger)) as client:
        refused = client.post("/v1/admin/promote")
        assert refused.status_code == 403 and "--api-key-env" in refused.json()["message"]
    with TestClient(create_app(champion, api_key=KEY)) as client:
        alone = client.post("/v1/admin/promote", headers=KEYED)
        assert alone.status_code == 409 and "--shadow" in alone.json()["message"]


def test_the_challenger_state_namespace_follows_the_url():
    version = "abcdef123456"
    assert shadow_state("memory", version) == "memory"
    assert shadow_state("sqlite:////var/s/state.db?synchronous=FULL", version) == (
        "sqlite:////var/s/state.abcdef123456.db?synchronous=FULL"
    )
    assert shadow_state("redis://:pw@h:6379/0", version) == (
        "redis://:pw@h:6379/0?prefix=fraudseq:abcdef123456:"
    )
    assert shadow_state("redis://h/0?prefix=app:", version) == (
        "redis://h/0?prefix=app:abcdef123456:"
    )
    with pytest.raises(FraudseqError, match="cannot derive"):
        shadow_state("postgres://u:secret@h/db", version)


def test_the_rolling_rank_correlation_is_spearman_over_the_last_pairs():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(0)
    window = RankWindow(size=30, every=7)
    a, b = rng.random(100), rng.random(100)
    b[:50] = a[:50]  # agreement at first, none later
    b[60:] = np.round(b[60:], 1)  # ties
    for start in range(0, 100, 4):
        window.add(a[start : start + 4], b[start : start + 4])
    # Recomputed once 7 or more pairs came since the last time: after 8, 16, ..., 96 pairs.
    assert window.value == pytest.approx(spearmanr(a[66:96], b[66:96]).statistic, abs=1e-12)
    assert math.isnan(spearman(np.ones((5, 2))))


# ------------------------------------------------------------------ fraudseq serve --shadow


def test_serve_refuses_a_shadow_with_several_workers(tmp_path, monkeypatch, capsys):
    from test_serve_cli import run

    state = f"sqlite:///{tmp_path / 'state.db'}"
    args = ("serve", tmp_path, "--state", state, "--workers", 2, "--shadow", tmp_path)
    assert run(monkeypatch, *args) == 1
    assert "--shadow runs with one worker" in capsys.readouterr().err


def test_serve_with_a_shadow_over_http(models, tmp_path):
    from test_serve_cli import KEY_VAR, Server

    champion_dir, challenger_dir, txs = models
    server = Server(
        str(champion_dir),
        "--shadow",
        str(challenger_dir),
        "--state",
        f"sqlite:///{tmp_path / 'state.db'}",
        "--api-key-env",
        KEY_VAR,
        "--clock",
        "data",
        log=tmp_path / "server.log",
        env={KEY_VAR: KEY},
    )
    try:
        server.wait_ready()
        import httpx

        with httpx.Client(base_url=server.url, headers=KEYED, timeout=30) as client:
            batch = client.post("/v1/score/batch", json={"transactions": txs[:20]})
            assert batch.status_code == 200, batch.text
            champion = batch.json()["results"][0]["model_version"]
            promoted = client.post("/v1/admin/promote").json()
            assert promoted["challenger"] == champion
            text = client.get("/metrics").text  # promote waited for the shadow's calls
            reply = client.post("/v1/score", json=txs[20]).json()
            assert reply["model_version"] == promoted["champion"]
        assert metric(text, "fraudseq_shadow_pairs_total") == 20
        assert metric(text, "fraudseq_shadow_promotions_total") == 1
    finally:
        code = server.stop()
    assert code == 0, server.output()
    assert (tmp_path / f"state.{promoted['champion']}.db").is_file()
    assert "shadow {" in server.output() and KEY not in server.output()


def test_the_challenger_has_its_own_redis_prefix(models, redis_url):
    import uuid

    from fraudseq.serving.stores import open_store

    champion_dir, challenger_dir, txs = models
    state = f"{redis_url}?prefix=fraudseq-test-{uuid.uuid4().hex[:8]}:"
    app = create_app(
        model_dir=champion_dir,
        state=state,
        detector_options={"clock": "data"},
        shadow_dir=challenger_dir,
    )
    ours = open_store(state)
    try:
        with TestClient(app) as client:
            serve(client, txs[:10])
            drain(client)
            version = client.app.state.serving.detector.challenger.model_version
        theirs = open_store(shadow_state(state, version))
        assert theirs.prefix == f"{ours.prefix}{version}:"
        for store in (ours, theirs):
            assert all(store.record(t["tx_id"]) is not None for t in txs[:10])
            assert store.labels() == {txs[0]["tx_id"]: 1, txs[1]["tx_id"]: 0}
        assert theirs.meta("state_fingerprint", "") != ours.meta("state_fingerprint", "")
        theirs.close()
    finally:
        ours.clear()  # the challenger's keys too: its prefix extends this one
        ours.close()


def test_a_challenger_with_another_schema_is_refused():
    from test_api import NO_ID, FakeDetector

    app = create_app(FakeDetector(), shadow=FakeDetector(NO_ID))
    with pytest.raises(FraudseqError, match="another schema"), TestClient(app):
        pass


def test_a_new_challenger_replays_the_champion_log_and_scores_as_if_it_had_served(models, tmp_path):
    champion_dir, challenger_dir, txs = models
    state = f"sqlite:///{tmp_path / 'state.db'}"
    with load(champion_dir, state) as champion, load(challenger_dir) as challenger:
        champion.score_batch(txs[:60])
        champion.feedback(txs[0]["tx_id"], 1)
        assert warm_up(challenger, champion, batch=25) == (60, 1)
        assert warm_up(challenger, champion) == (0, 0)  # it has a log now: left as it is
        replayed = challenger.score_batch(txs[60:])
    with load(challenger_dir) as direct:  # the challenger as if it had served from the start
        direct.score_batch(txs[:60])
        direct.feedback(txs[0]["tx_id"], 1)
        expected = direct.score_batch(txs[60:])
    got = [r["fraud_probability"] for r in replayed]
    want = [r["fraud_probability"] for r in expected]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)
