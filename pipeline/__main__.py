"""``python -m pipeline``: see :mod:`pipeline.cli`. Starts with a caching allocator where one is installed
(:mod:`pipeline.fastpath`)."""

from __future__ import annotations

import sys

from pipeline.fastpath import reexec_with_allocator

if __name__ == "__main__":
    reexec_with_allocator(sys.argv[1:])
    from pipeline.cli import main

    sys.exit(main())
