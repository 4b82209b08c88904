#!/usr/bin/env bash
# Greedy predictions of the tuned (and optionally the base) model:
#   bash scripts/05_predict.sh [demo|paper] [--base] [key=value ...]
# Needs runs/<profile>/prompts (prompts stage) and, for the tuned model, runs/<profile>/train/best.
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE="${1:-demo}"; shift || true
source scripts/project_python.sh
BASE=0
if [[ "${1:-}" == "--base" ]]; then BASE=1; shift; fi
CFG="pipeline/configs/predict_${PROFILE}.yaml"
[[ -f "$CFG" ]] || { echo "no config $CFG" >&2; exit 2; }
"$PY" -m pipeline predict --config "$CFG" "$@"
if [[ "$BASE" == 1 ]]; then
  "$PY" -m pipeline predict --config "pipeline/configs/predict_base_${PROFILE}.yaml" "$@"
fi
