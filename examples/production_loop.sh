#!/usr/bin/env bash
# The production loop of the README, on simulated data, in a scratch directory:
# train -> register -> serve -> feedback -> export-history -> train a challenger -> monitor
# -> serve it in shadow -> promote -> export ONNX. Run from the repository root:
#   bash examples/production_loop.sh [DIR]
set -euo pipefail
repo=$(pwd)
dir=${1:-$(mktemp -d)}
mkdir -p "$dir" && cd "$dir"
export FRAUDSEQ_API_KEY=change-me MLFLOW_ALLOW_FILE_STORE=true
export MLFLOW_TRACKING_URI="file://$dir/mlruns"
schema=$repo/schemas/simulator.toml
replay() { python "$repo/examples/replay.py" tx.parquet --schema "$schema" "$@"; }
ready() { until curl -sf localhost:8000/readyz >/dev/null; do sleep 1; done; }
serve() { fraudseq serve "$@" --state sqlite:///state.db --api-key-env FRAUDSEQ_API_KEY --clock data & }
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT

set -x
fraudseq simulate --out tx.parquet --accounts 500 --days 60 --seed 0
fraudseq train tx.parquet --schema "$schema" --model lstm --epochs 3 --train-until 2026-02-01 --out champion
python -c 'import fraudseq.mlflow as m; m.log_model("champion", registered_model_name="fraud")'
serve models:/fraud/1; ready
replay --from 2026-02-01 --until 2026-02-20 --feedback
kill %1; wait %1 || true
fraudseq export-history sqlite:///state.db --out history.parquet --model champion
fraudseq train history.parquet --schema "$schema" --model xgboost --out challenger
fraudseq monitor champion tx.parquet --from 2026-02-20 --json drift.json
serve champion --shadow challenger; ready
replay --from 2026-02-20 --until 2026-03-02
curl -s localhost:8000/metrics -H "X-API-Key: $FRAUDSEQ_API_KEY" | grep -E '^fraudseq_shadow_(pairs|alerts|rank)'
curl -s -X POST localhost:8000/v1/admin/promote -H "X-API-Key: $FRAUDSEQ_API_KEY"; echo
fraudseq export champion --format onnx --out champion-onnx
