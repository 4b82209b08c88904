# Sourced by scripts/*.sh: sets PY to the project's interpreter, or stops with how to set it up.
#   $PYTHON if set (e.g. a conda env's python), else .venv/bin/python (what `make setup` creates), else a `python`
#   on PATH that has the project's dependencies (an activated environment); otherwise an error naming `make setup`.
_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -n "${PYTHON:-}" ]]; then
  PY="$PYTHON"
elif [[ -x "$_root/.venv/bin/python" ]]; then
  PY="$_root/.venv/bin/python"
elif command -v python >/dev/null 2>&1 && python -c "import torch, transformers, yaml, tqdm" >/dev/null 2>&1; then
  PY="python"
else
  echo "error: no project environment: $_root/.venv/bin/python does not exist and no python on PATH has the" \
       "project's dependencies. Set up once with \`make setup\` (creates .venv), then \`source .venv/bin/activate\`" \
       "(or set PYTHON=/path/to/python)." >&2
  exit 2
fi
export PY
