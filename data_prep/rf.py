"""Command line for RF frames: a zip of complex ``.npy`` frames (:mod:`research.data.rf_iq`), or with
``--format shards`` ArrayRecord shards of the loader's features (:mod:`research.data.rf_shards`)."""

import sys

if __name__ == "__main__":
    if "--format" in sys.argv[1:] or any(a.startswith("--format=") for a in sys.argv[1:]):
        from research.data.rf_shards import main
    else:
        from research.data.rf_iq import main
    sys.exit(main())
