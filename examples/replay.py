"""Replay a transactions file against a running `fraudseq serve`, then send its labels.

    python examples/replay.py tx.parquet --schema schemas/simulator.toml \
        --from 2026-02-01 --until 2026-02-15 [--url http://127.0.0.1:8000] [--feedback]

The transactions of [--from, --until) go to /v1/score/batch in time order, 500 a request;
with --feedback, their labels then go to /v1/feedback (a production system sends them as
chargebacks and analyst decisions arrive). The API key, if the server needs one, is read
from FRAUDSEQ_API_KEY. Prints the number of transactions, alerts and labels sent.
"""

from __future__ import annotations

import argparse
import json
import os
import urllib.request

from fraudseq.schema import Schema, load_transactions

BATCH = 500


def post(url: str, path: str, body: dict) -> dict:
    headers = {"Content-Type": "application/json"}
    if os.environ.get("FRAUDSEQ_API_KEY"):
        headers["X-API-Key"] = os.environ["FRAUDSEQ_API_KEY"]
    request = urllib.request.Request(url + path, json.dumps(body).encode(), headers)
    with urllib.request.urlopen(request, timeout=60) as reply:
        return json.load(reply)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--schema", required=True)
    parser.add_argument("--from", dest="start", required=True)
    parser.add_argument("--until", dest="end", required=True)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--feedback", action="store_true")
    args = parser.parse_args()
    schema = Schema.from_toml(args.schema)
    frame = load_transactions(args.data, schema)
    frame = frame[(frame[schema.time] >= args.start) & (frame[schema.time] < args.end)]
    columns = [c for c in schema.source_columns(with_label=False) if c in frame.columns]
    requests = frame[columns].assign(**{schema.time: frame[schema.time].map(str)})
    rows = requests.to_dict(orient="records")
    alerts = 0
    for start in range(0, len(rows), BATCH):
        results = post(args.url, "/v1/score/batch", {"transactions": rows[start : start + BATCH]})
        alerts += sum(r["alert"] for r in results["results"])
    labels = 0
    if args.feedback:
        for tx_id, label in zip(frame[schema.id_column], frame[schema.label], strict=True):
            post(args.url, "/v1/feedback", {"transaction_id": tx_id, "label": int(label)})
            labels += 1
    print(json.dumps({"transactions": len(rows), "alerts": alerts, "labels_sent": labels}))


if __name__ == "__main__":
    main()
