"""Command line for audio ingestion: WAV recordings -> ArrayRecord shards of amplitude spectra
(:mod:`research.data.audio_shards`; the reader lives in ``research``, this is the thin CLI)."""

import sys

from research.data.audio_shards import main

if __name__ == "__main__":
    sys.exit(main())
