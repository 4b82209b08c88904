#!/usr/bin/env bash
# Run the whole pipeline for a profile (pipeline/profiles/<profile>.yaml), stage by stage; each stage is
# skipped when up to date. Extra arguments go to the runner, e.g. step overrides or --steps:
#   bash scripts/run_all.sh [demo|paper|tiny] [--steps train,evaluate] [train.optim.max_steps=12 ...]
# demo : embedded SmolLM2-135M-Instruct on CPU, small data, finishes in ~22 minutes on 2 cores (robust: ~38).
# paper: the reference setting (50,688 samples, 128 prefix tokens, lr 0.02, 256/128) for a GPU.
# methods / methods_gpu: every tuning method + base + PET-style cloze in one table (docs/methods.md); methods_tiny: smoke.
# The stage graph (configs, run root, which output feeds which input) lives in the profile file;
# `python -m pipeline run PROFILE --dry-run` prints the equivalent single-stage commands.
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE="${1:-demo}"; shift || true
source scripts/project_python.sh
[[ -f "pipeline/profiles/$PROFILE.yaml" ]] || { echo "unknown profile $PROFILE ($(ls pipeline/profiles | sed 's/.yaml//' | tr '\n' ' '))" >&2; exit 2; }
"$PY" -m pipeline run "$PROFILE" "$@"
