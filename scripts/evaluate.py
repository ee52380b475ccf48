"""Thin wrapper: the program is recsys/cli/evaluate.py (installed as `recsys-evaluate`); `python scripts/evaluate.py --help`."""
import sys

from recsys.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
