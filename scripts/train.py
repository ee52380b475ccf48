"""Thin wrapper around recsys/cli/train.py, also installed as `recsys-train` (`--help` lists every option)."""
import sys

from recsys.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
