"""Command line for :mod:`research.data.fetch`: download, verify and unpack public datasets.

    python -m data_prep.fetch ecg5000 [fashion_mnist fsdd rf sdss | all] [--root DIR]

Prints each dataset's folder. Offline, a checksum mismatch or a corrupt download: one ``error:``
line naming the dataset, the URL and how to download it by hand; exit status 2.
"""

import argparse
import sys

from research.data.fetch import FETCHABLE, FetchError, fetch, fetch_root


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data_prep.fetch",
                                     description="Download, verify and unpack public datasets.")
    parser.add_argument("datasets", nargs="+", metavar="dataset", help=f"{', '.join(FETCHABLE)} or all")
    parser.add_argument("--root", help=f"data folder (default: $RESEARCH_DATA, else {fetch_root()})")
    args = parser.parse_args(argv)
    names = FETCHABLE if "all" in args.datasets else args.datasets
    try:
        unknown = [n for n in names if n not in FETCHABLE]
        if unknown:
            raise FetchError(f"unknown dataset {unknown[0]!r}; choose from {', '.join(FETCHABLE)} or all")
        for name in names:
            print(fetch(name, args.root))
    except FetchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
