"""Command line for :mod:`research.data.sdss_fetch` (the reader lives in ``research``; this is the thin CLI)."""

import sys

from research.data.sdss_fetch import main

if __name__ == "__main__":
    sys.exit(main())
