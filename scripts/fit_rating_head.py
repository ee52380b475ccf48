"""Thin wrapper: the program is recsys/cli/fit_rating_head.py (installed as `recsys-fit-rating-head`); `python scripts/fit_rating_head.py --help`."""
import sys

from recsys.cli.fit_rating_head import main

if __name__ == "__main__":
    sys.exit(main())
