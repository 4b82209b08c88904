#!/usr/bin/env bash
# bash scripts/transformers_matrix.sh [VERSION ...]
# The tests that touch the transformers API (cache, text init, PEFT format, generation) against the oldest
# transformers the pyproject range allows and the newest 5.x the registry serves (or the VERSIONs given).
# Each version gets its own venv under ${MATRIX_DIR:-.cache/transformers-matrix}: only transformers (and any
# dependency it needs at another version) is installed there; everything else comes from the project's .venv
# through a .pth file, so a run downloads ~13 MB per version instead of the whole stack.
# Also run by the slow test tests/test_transformers_matrix.py (pytest -m slow).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/project_python.sh
MATRIX_DIR=${MATRIX_DIR:-.cache/transformers-matrix}
TESTS=${MATRIX_TESTS:-"tests/test_deprecations.py tests/test_peft_format.py tests/test_methods_peft.py"}
FILTER=${MATRIX_FILTER:-"not qwen2 and not glm"}

if [ $# -gt 0 ]; then
  versions=("$@")
else
  mapfile -t versions < <("$PY" - <<'EOF'
import re, subprocess, sys, tomllib
from packaging.specifiers import SpecifierSet
from packaging.version import Version
spec = next(d for d in tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
            if d.startswith("transformers"))
allowed = SpecifierSet(spec[len("transformers"):])
out = subprocess.run([sys.executable, "-m", "pip", "index", "versions", "transformers"], capture_output=True,
                     text=True, check=True).stdout
served = [Version(v) for v in re.search(r"Available versions: (.*)", out).group(1).split(", ")]
ok = sorted(v for v in served if v in allowed and not v.is_prerelease)
newest5 = max(v for v in served if v.major == 5 and not v.is_prerelease)
print(ok[0]); print(newest5)
EOF
  )
fi

site=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
status=0
for v in "${versions[@]}"; do
  venv="$MATRIX_DIR/transformers-$v"
  if [ ! -x "$venv/bin/python" ]; then
    "$PY" -m venv --without-pip "$venv"
    vsite=$("$venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    echo "$site" > "$vsite/project-venv.pth"   # after the venv's own site-packages: its transformers wins
    "$PY" -m pip --python "$venv/bin/python" install -q "transformers==$v"
  fi
  echo "== transformers $v: $("$venv/bin/python" -c 'import transformers; print(transformers.__file__)')"
  if ! PYTHONPATH=$PWD OMP_NUM_THREADS=1 "$venv/bin/python" -m pytest -q -p no:cacheprovider $TESTS -k "$FILTER"; then
    echo "== transformers $v: FAILED"; status=1
  fi
done
exit $status
