#!/usr/bin/env bash
# Data preparation: CW-simulated (and/or imported) intent records with splits.
# Usage: scripts/01_data_prep.sh [CONFIG] [key=value ...]   (default config: demo profile)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/project_python.sh
"$PY" -m pipeline data_prep --config "${1:-data_prep/configs/demo.yaml}" "${@:2}"
