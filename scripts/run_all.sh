#!/usr/bin/env bash
# Run the whole pipeline for a profile, stage by stage; each stage is skipped when up to date.
#   bash scripts/run_all.sh [demo|paper] [extra key=value overrides for every stage are not supported: edit the YAMLs]
# demo : embedded SmolLM2-135M-Instruct on CPU, small data, finishes in about 20 minutes on 2 cores.
# paper: the reference setting (50,688 samples, 128 prefix tokens, lr 0.02, 256/128) for a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE="${1:-demo}"
PY="${PYTHON:-python}"
case "$PROFILE" in demo|paper) ;; *) echo "unknown profile $PROFILE (demo|paper)" >&2; exit 2 ;; esac
start=$(date +%s)
step() { echo "=== [$PROFILE] $1 ($(( $(date +%s) - start ))s elapsed)"; }
step data_prep; "$PY" -m pipeline data_prep --config "data_prep/configs/$PROFILE.yaml"
step prompts;   "$PY" -m pipeline prompts   --config "prompts_cot/configs/$PROFILE.yaml"
step train;     "$PY" -m pipeline train     --config "pipeline/configs/train_$PROFILE.yaml"
step evaluate;  "$PY" -m pipeline evaluate  --config "eval/configs/$PROFILE.yaml"
echo "=== [$PROFILE] done in $(( $(date +%s) - start ))s; report: runs/$PROFILE/evaluate/report.html"
