"""Mutation scores per module from the results ``mutmut run`` left in ``mutants/`` (``make mutants`` prints them).

A mutant is killed when a test fails with it in place; the score is killed / (killed + survived + untested), so a
mutant no test reaches counts against the module. Timeouts count as killed (the mutant broke the code's progress).

Example:
    python scripts/mutation_scores.py mutants      # a Markdown table, one row per mutated module
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from mutmut.stats import status_by_exit_code


def scores(folder: Path) -> dict[str, Counter]:
    """Status counts per module (``pipeline/x.py``) from mutmut's ``.meta`` files under ``folder``."""
    out: dict[str, Counter] = {}
    for meta in sorted(folder.rglob("*.py.meta")):
        codes = json.loads(meta.read_text()).get("exit_code_by_key", {})
        if codes:
            out[str(meta.relative_to(folder))[: -len(".meta")]] = Counter(status_by_exit_code[c] for c in codes.values())
    return out


def table(counts: dict[str, Counter]) -> str:
    """The Markdown table of :func:`scores`."""
    rows = ["| module | mutants | checked | killed | survived | no test reaches it | score |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for module, c in counts.items():
        killed = c["killed"] + c["timeout"] + c["segfault"]
        judged = killed + c["survived"] + c["no tests"]
        score = f"{killed / judged:.0%}" if judged else "-"
        checked = sum(c.values()) - c["not checked"]
        rows.append(f"| `{module}` | {sum(c.values())} | {checked} | {killed} | {c['survived']} | {c['no tests']} "
                    f"| {score} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", default="mutants", type=Path, help="mutmut's folder (default mutants)")
    args = parser.parse_args(argv)
    counts = scores(args.folder)
    if not counts:
        sys.stderr.write(f"no mutmut results under {args.folder}: run `make mutants` first\n")
        return 1
    sys.stdout.write(table(counts) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
