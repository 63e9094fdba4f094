"""Command line for :mod:`research.data.rf_iq` (the reader lives in ``research``; this is the thin CLI)."""

import sys

from research.data.rf_iq import main

if __name__ == "__main__":
    sys.exit(main())
