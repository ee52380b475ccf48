"""Thin wrapper: the program is recsys/cli/train.py (installed as `recsys-train`); `python scripts/train.py --help`."""
import sys

from recsys.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
