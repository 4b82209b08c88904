#!/usr/bin/env bash
# One round of the domain-expert labelling loop (demo profile); every step is a `python -m pipeline ...`
# stage and is skipped when up to date, so the script can simply be re-run after the expert step.
#
#   bash scripts/labelling_loop.sh ROUND [--review NAME]... [--label-studio EXPORT.json]... [--users USERS.json]
#                                        [--policy majority|flag]
#
#   round 1 starts from the demo run: $RUN_ROOT/data_prep (+ prompts, train/best); RUN_ROOT defaults to runs/demo;
#   round N>1 starts from the dataset version and model that round N-1 produced.
#
# Sequence: evaluate the current model on the train pool -> label select -> label export ->
#   (expert: Label Studio with tasks.json + labeling_config.xml, and/or the terminal `label review`)
#   -> label import -> label agreement -> label merge (new dataset version) -> prompts -> train -> evaluate.
# Without --review / --label-studio the script stops after the export and prints what to do next.
# Label Studio exports name reviewers by user id; --users gives the server's user list (default: the
# users.json next to the first export, which `scripts/label_studio_server.py pull` writes) so reviews
# carry e-mails instead of user-<id>.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/project_python.sh
ROUND="${1:?usage: labelling_loop.sh ROUND [--review NAME]... [--label-studio EXPORT.json]... [--users USERS.json] [--policy P]}"
shift
REVIEWERS=(); LS_EXPORTS=(); POLICY=majority; USERS=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --review) REVIEWERS+=("$2"); shift 2 ;;
    --label-studio) LS_EXPORTS+=("$2"); shift 2 ;;
    --users) USERS="$2"; shift 2 ;;
    --policy) POLICY="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
BATCH="${BATCH_SIZE:-32}"          # instances per round
POOL_LIMIT="${POOL_LIMIT:-300}"    # pool rows evaluated per variant (CPU budget)
MODEL="${MODEL:-smollm2}"
RUN_ROOT="${RUN_ROOT:-runs/demo}"  # the run (profile run_root) the loop starts from
L="$RUN_ROOT/label/round$ROUND"
DATASET="$RUN_ROOT/label/dataset"

if [[ "$ROUND" == 1 ]]; then
  BASE="$RUN_ROOT/data_prep"; PROMPTS="$RUN_ROOT/prompts"; TRAIN="$RUN_ROOT/train"
else
  PREV="$RUN_ROOT/label/round$((ROUND - 1))"
  BASE="$(cat "$PREV/records_dir")"; PROMPTS="$PREV/prompts"; TRAIN="$PREV/train"
fi
join() { local IFS=,; echo "[$*]"; }
step() { echo "=== [label round $ROUND] $*"; }

step "1/9 evaluate the current model on the train pool"
"$PY" -m pipeline evaluate --config eval/configs/demo.yaml \
  out_dir="$L/pool_eval" data_dir="$BASE" prompts_dir="$PROMPTS" train_dir="$TRAIN" split=train limit="$POOL_LIMIT" \
  "models=[{tag: tuned, spec: $MODEL, checkpoint: best}]" baseline_tag=tuned \
  "perturbations=[{name: typos, severities: [1]}, {name: noise, severities: [1]}]" perturbed_fraction=0.5

step "2/9 select a batch for review"
"$PY" -m pipeline label select --config pipeline/label/configs/select_demo.yaml \
  out_dir="$L/select" data_dir="$BASE" predictions="$L/pool_eval/predictions.jsonl" \
  batch_size="$BATCH" batch_id="round$ROUND" seed="$ROUND"

step "3/9 export Label Studio tasks + labelling config + plain JSONL"
"$PY" -m pipeline label export --config pipeline/label/configs/export_demo.yaml \
  out_dir="$L/export" selection="$L/select/selection.jsonl"

if [[ ${#REVIEWERS[@]} -eq 0 && ${#LS_EXPORTS[@]} -eq 0 ]]; then
  cat <<EOF
=== expert step. Either
  * Label Studio (README "Expert labelling loop" has the details):
      $PY scripts/label_studio_server.py start            # other terminal; installs it on first use
      $PY scripts/label_studio_server.py push $L/export --title "round $ROUND"
    experts annotate at the printed URL; then, with the project id push printed:
      $PY scripts/label_studio_server.py pull PROJECT_ID $L/label_studio
      bash scripts/labelling_loop.sh $ROUND --label-studio $L/label_studio/export.json
    (or by hand: paste $L/export/labeling_config.xml, import $L/export/tasks.json, Export > JSON,
    and pass the user list with --users)
  * or the terminal tool (resumable; q quits):
    bash scripts/labelling_loop.sh $ROUND --review your_name
EOF
  exit 0
fi

REVIEW_FILES=()
for name in "${REVIEWERS[@]}"; do
  step "4/9 terminal review by $name"
  "$PY" -m pipeline label review --config pipeline/label/configs/review_demo.yaml \
    out_dir="$L/review" tasks="$L/export/tasks.jsonl" reviewer="$name"
done
[[ ${#REVIEWERS[@]} -gt 0 ]] && REVIEW_FILES+=("$L/review/reviews.jsonl")
if [[ ${#LS_EXPORTS[@]} -gt 0 ]]; then
  step "5/9 import the Label Studio export(s)"
  if [[ -z "$USERS" && -f "$(dirname "${LS_EXPORTS[0]}")/users.json" ]]; then
    USERS="$(dirname "${LS_EXPORTS[0]}")/users.json"
  fi
  "$PY" -m pipeline label import --config pipeline/label/configs/import_demo.yaml \
    out_dir="$L/import" "label_studio=$(join "${LS_EXPORTS[@]}")" "tasks=[$L/export/tasks.jsonl]" \
    users="${USERS:-null}"
  REVIEW_FILES+=("$L/import/reviews.jsonl")
fi

step "6/9 agreement between reviewers and with the model"
"$PY" -m pipeline label agreement --config pipeline/label/configs/agreement_demo.yaml \
  out_dir="$L/agreement" "reviews=$(join "${REVIEW_FILES[@]}")"

step "7/9 merge into a new dataset version"
"$PY" -m pipeline label merge --config pipeline/label/configs/merge_demo.yaml \
  out_dir="$DATASET" data_dir="$BASE" "reviews=$(join "${REVIEW_FILES[@]}")" policy="$POLICY"
NEW="$DATASET/$(cat "$DATASET/LATEST")"
echo "$NEW" > "$L/records_dir"
echo "new records: $NEW (conflicts to adjudicate: $NEW/adjudication.jsonl)"

step "8/9 prompts + train on the new version"
"$PY" -m pipeline prompts --config prompts_cot/configs/demo.yaml data_dir="$NEW" out_dir="$L/prompts"
"$PY" -m pipeline train --config pipeline/configs/train_demo.yaml prompts_dir="$L/prompts" out_dir="$L/train"

step "9/9 evaluate base vs the new model on the test split"
"$PY" -m pipeline evaluate --config eval/configs/demo.yaml out_dir="$L/evaluate" data_dir="$NEW" \
  prompts_dir="$L/prompts" train_dir="$L/train" "models=[{tag: base, spec: $MODEL}, {tag: tuned, spec: $MODEL, checkpoint: best}]"
echo "=== [label round $ROUND] done: report $L/evaluate/report.md; next: bash scripts/labelling_loop.sh $((ROUND + 1))"
