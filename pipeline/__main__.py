"""``python -m pipeline`` and the ``unetpp`` console script: see :mod:`pipeline.cli`. Both start with a caching
allocator where one is installed (:mod:`pipeline.fastpath`)."""

from __future__ import annotations

import sys

from pipeline.fastpath import reexec_with_allocator


def run() -> int:
    """Run the command line after re-executing with the caching allocator (once; see
    :func:`pipeline.fastpath.reexec_with_allocator`).

    Example:
        ``unetpp segment --model m.ts --input scans/ --output labels/`` (= ``python -m pipeline segment ...``)
    """
    reexec_with_allocator(sys.argv[1:])
    from pipeline.cli import main

    return main()


if __name__ == "__main__":
    sys.exit(run())
