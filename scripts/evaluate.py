"""Thin wrapper around recsys/cli/evaluate.py, also installed as `recsys-evaluate` (`--help` lists every option)."""
import sys

from recsys.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
