"""Thin wrapper around recsys/cli/campaign.py, also installed as `recsys-campaign` (`--help` for every option)."""
import sys

from recsys.cli.campaign import main

if __name__ == "__main__":
    sys.exit(main())
