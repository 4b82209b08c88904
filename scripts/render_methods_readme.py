"""Render README.md's "Choosing a tuning method" section from a methods table (``method_table.json``).

    python scripts/render_methods_readme.py runs/methods/table/method_table.json \
        --machine "shared 2-core CPU box (Intel Xeon, AMX)" --date 2026-12-08 --wall "52 min 10 s"

Replaces the block between ``<!-- methods-table:start -->`` and ``<!-- methods-table:end -->`` in the README
(appends it when absent); ``--print`` writes the section to stdout instead. The text comes from
:func:`eval.method_table.readme_section`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from eval.method_table import readme_section, replace_readme_section  # noqa: E402
from pipeline.core.io import write_text  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("table", type=Path, help="method_table.json of the run")
    p.add_argument("--readme", type=Path, default=ROOT / "README.md")
    p.add_argument("--command", default="python -m pipeline run methods")
    p.add_argument("--machine", default="<machine>")
    p.add_argument("--date", default="<date>")
    p.add_argument("--wall", default="<wall time>")
    p.add_argument("--print", action="store_true", help="print the section instead of editing the README")
    args = p.parse_args(argv)
    data = json.loads(args.table.read_text(encoding="utf-8"))
    section = readme_section(data, {"command": args.command, "machine": args.machine, "date": args.date,
                                    "wall": args.wall})
    if args.print:
        sys.stdout.write(section)
        return 0
    write_text(args.readme, replace_readme_section(args.readme.read_text(encoding="utf-8"), section))
    print(f"wrote the methods section into {args.readme}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
