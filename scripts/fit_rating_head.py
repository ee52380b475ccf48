"""Thin wrapper around recsys/cli/fit_rating_head.py, also installed as `recsys-fit-rating-head`."""
import sys

from recsys.cli.fit_rating_head import main

if __name__ == "__main__":
    sys.exit(main())
