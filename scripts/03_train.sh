#!/usr/bin/env bash
# Train the P-Tuning v2 prefix (stage train).
#   bash scripts/03_train.sh [demo|paper|tiny|chatglm2_6b] [key=value ...]
#   NUM_GPUS=8 bash scripts/03_train.sh paper          # multi-GPU through the deepspeed launcher
#   HOSTFILE=hostfile bash scripts/03_train.sh chatglm2_6b model.spec=/path/to/chatglm2-6b   # multi-node
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE="${1:-demo}"; shift || true
CONFIG="pipeline/configs/train_${PROFILE}.yaml"
[ -f "$CONFIG" ] || { echo "no config $CONFIG" >&2; exit 2; }
source scripts/project_python.sh
DS="$(dirname "$PY")/deepspeed"; [[ -x "$DS" ]] || DS=deepspeed   # the launcher of the same environment
if [ -n "${HOSTFILE:-}" ]; then
  exec "$DS" --hostfile "$HOSTFILE" --no_local_rank --module pipeline train --config "$CONFIG" "$@"
elif [ -n "${NUM_GPUS:-}" ] && [ "${NUM_GPUS}" -gt 1 ]; then
  exec "$DS" --num_gpus "$NUM_GPUS" --no_local_rank --module pipeline train --config "$CONFIG" "$@"
else
  exec "$PY" -m pipeline train --config "$CONFIG" "$@"
fi
