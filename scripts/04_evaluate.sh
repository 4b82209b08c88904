#!/usr/bin/env bash
# Evaluate base vs tuned models (plain vs CoT, clean and perturbed), then the side-by-side comparison:
#   bash scripts/04_evaluate.sh [demo|paper|tiny] [key=value ...]
# Needs runs/<profile>/data_prep, runs/<profile>/prompts and (for the tuned model) runs/<profile>/train/best.
# Report: runs/<profile>/evaluate/report.html (self-contained). Interrupted runs resume from
# runs/<profile>/evaluate/.partial/rows.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE="${1:-demo}"; shift || true
source scripts/project_python.sh
CFG="eval/configs/${PROFILE}.yaml"
[[ -f "$CFG" ]] || { echo "no config $CFG" >&2; exit 2; }
"$PY" -m pipeline evaluate --config "$CFG" "$@"
if [[ -f "eval/configs/compare_${PROFILE}.yaml" ]]; then
  "$PY" -m pipeline compare --config "eval/configs/compare_${PROFILE}.yaml"
fi
echo "report: runs/${PROFILE}/evaluate/report.html"
