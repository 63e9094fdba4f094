"""Command line for SDSS ingestion: one npz (:mod:`research.data.sdss_fits`), or with ``--format shards``
ArrayRecord shards for data beyond memory (:mod:`research.data.sdss_shards`)."""

import sys

if __name__ == "__main__":
    if "--format" in sys.argv[1:] or any(a.startswith("--format=") for a in sys.argv[1:]):
        from research.data.sdss_shards import main
    else:
        from research.data.sdss_fits import main
    sys.exit(main())
