"""``python -m pipeline``: see :mod:`pipeline.cli`.

Run by an interpreter without the project's dependencies (the system ``python`` instead of ``.venv``), the CLI
says how to set up instead of a ``ModuleNotFoundError`` traceback (:func:`pipeline.cli.missing_dependency`).
"""

import sys

from pipeline import missing_package_message

try:
    from pipeline.cli import main, missing_dependency
except ModuleNotFoundError as exc:  # the CLI's own imports (yaml, ...) are missing: nothing of it can run
    if exc.name is None or exc.name.split(".")[0] in ("pipeline", "data_prep", "prompts_cot", "eval"):
        raise
    print(missing_package_message(exc.name, sys.executable), file=sys.stderr)
    sys.exit(2)

if __name__ == "__main__":
    sys.exit(missing_dependency(main))
