"""`python -m recsys.data info NAME [--data-dir PATH]`: print a dataset's headline numbers as JSON."""
from __future__ import annotations

import argparse
import json
import sys

from recsys.data.loader import KNOWN_NAMES, load_dataset
from recsys.data.schema import DataError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recsys.data", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="print JSON stats: ratings, users, items, rating and time range")
    info.add_argument("name", nargs="?", default=None,
                      help=f"dataset name ({', '.join(KNOWN_NAMES)}); without a name: the release --data-dir holds, or "
                           "the embedded ml-100k")
    info.add_argument("--data-dir", help="folder with the release's files (u.data, ratings.dat, ratings.csv, ...)")
    info.add_argument("--no-cache", action="store_true", help="read and validate the source files again")
    info.add_argument("--no-download", action="store_true", help="never try the network")
    args = parser.parse_args(argv)
    try:
        data = load_dataset(args.name, args.data_dir, cache=not args.no_cache, download=not args.no_download)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stats = data.stats()
    if data.notes:
        stats["notes"] = data.notes
    print(json.dumps(stats, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
