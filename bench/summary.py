"""The summary table of a ``bench/run`` output: every target of every benchmark, its figure, and whether it was met.

    python -m bench.summary bench/results-<time>.txt
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main() -> None:
    rows = []
    for line in Path(sys.argv[1]).read_text().splitlines():
        if not line.startswith("RESULT "):
            continue
        name, _, figures = line.removeprefix("RESULT ").partition(" ")
        rows += [(name, check) for check in json.loads(figures).get("checks", [])]
    width = max((len(check["what"]) for _, check in rows), default=10)
    print(f"{'benchmark':<20} {'what':<{width}} {'figure':>10}  {'target':<10} met")
    for name, check in rows:
        print(f"{name:<20} {check['what']:<{width}} {check['value']:>10.2f}  {check['target']:<10} "
              f"{'yes' if check['met'] else 'NO'}")
    missed = sum(1 for _, check in rows if not check["met"])
    print(f"{len(rows) - missed} of {len(rows)} targets met")


if __name__ == "__main__":
    main()
