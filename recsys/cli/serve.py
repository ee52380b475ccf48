"""Serve saved runs' top-k over HTTP (FastAPI on uvicorn).

    recsys-serve --runs checkpoints                       # http://127.0.0.1:8000 (docs at /docs)
    recsys-serve --runs checkpoints --host 0.0.0.0 --port 8000   # reachable from other machines (a pod)

Binds to 127.0.0.1 unless --host says otherwise. Only complete, integrity-checked runs of the folder are served.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="recsys-serve", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default="checkpoints", help="the runs folder to serve (default checkpoints)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    if not Path(args.runs).is_dir():
        print(f"error: {args.runs}: no such runs folder", file=sys.stderr)
        return 2
    import uvicorn

    from recsys.serve.app import create_app

    uvicorn.run(create_app(args.runs), host=args.host, port=args.port, log_level="info")
    return 0


if __name__ == "__main__":
    sys.exit(main())
