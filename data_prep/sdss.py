"""Command line for :mod:`research.data.sdss_fits` (the reader lives in ``research``; this is the thin CLI)."""

import sys

from research.data.sdss_fits import main

if __name__ == "__main__":
    sys.exit(main())
