#!/usr/bin/env bash
# Render prompt/response rows (plain + cot variants) from data_prep records:
#   bash scripts/02_prompts.sh [CONFIG.yaml] [key=value ...]     (default prompts_cot/configs/demo.yaml)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/project_python.sh
"$PY" -m pipeline prompts --config "${1:-prompts_cot/configs/demo.yaml}" "${@:2}"
