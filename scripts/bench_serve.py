"""Scoring API latency and throughput: N concurrent clients on localhost for T seconds against `recsys-serve`.

    python scripts/bench_serve.py [--runs checkpoints] [--run NAME ...] [--clients 8] [--seconds 20]
                                  [--server-threads 1]

Starts `recsys-serve` on a free localhost port in its own process (`--server-threads`: torch threads there), then
for each run: one warm-up request, and `--clients` threads each sending POST /recommend for known users (round-robin
over the run's users, k=10, keep-alive connections) for `--seconds`. Prints p50 / p95 / p99 latency as the client
sees it, requests per second and errors, as a table with the command that made it. Targets on the 2-core project
machine at 8 clients on ML-100K: p50 <= 10 ms, p99 <= 50 ms.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RUNS = ("ss4rec-ranking-ml-100k-len50-released-seed0", "sasrec-ranking-ml-100k-len50-seed0")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(port: int, seconds: float = 120) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/health")
            if c.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.3)
    raise SystemExit("the server did not start")


def post(conn: http.client.HTTPConnection, body: dict) -> tuple[int, dict]:
    conn.request("POST", "/recommend", json.dumps(body), {"content-type": "application/json"})
    resp = conn.getresponse()
    return resp.status, json.loads(resp.read() or b"{}")


def client_loop(port: int, run: str, users: list[int], offset: int, stop: float, out: list, errors: list) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    i = offset
    while time.perf_counter() < stop:
        t0 = time.perf_counter()
        try:
            status, _ = post(conn, {"run": run, "user_id": users[i % len(users)], "k": 10})
        except OSError as exc:
            errors.append(str(exc))
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            continue
        out.append(time.perf_counter() - t0)
        if status != 200:
            errors.append(status)
        i += 7


def bench_run(port: int, run: str, clients: int, seconds: float) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    status, first = post(conn, {"run": run, "user_id": 1, "k": 10})  # loads the model (not timed)
    if status != 200:
        raise SystemExit(f"{run}: {first}")
    runs = json.loads(_get(conn, "/runs"))["runs"]
    info = next(r for r in runs if r["run"] == run)
    users = list(range(1, 200))
    lat: list[float] = []
    errors: list = []
    stop = time.perf_counter() + seconds
    threads = [threading.Thread(target=client_loop, args=(port, run, users, c, stop, lat, errors))
               for c in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ms = np.array(lat) * 1000
    return {"run": run, "model": info["model"], "dataset": info["dataset"], "clients": clients, "requests": len(lat),
            "rps": len(lat) / wall, "p50": np.percentile(ms, 50), "p95": np.percentile(ms, 95),
            "p99": np.percentile(ms, 99), "errors": len(errors)}


def _get(conn, path: str) -> bytes:
    conn.request("GET", path)
    return conn.getresponse().read()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default=str(ROOT / "checkpoints"))
    ap.add_argument("--run", nargs="+", default=list(DEFAULT_RUNS))
    ap.add_argument("--clients", type=int, nargs="+", default=[8])
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--server-threads", type=int, default=1)
    args = ap.parse_args()
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": str(args.server_threads), "MKL_NUM_THREADS": str(args.server_threads)}
    server = subprocess.Popen([sys.executable, "-m", "recsys.cli.serve", "--runs", args.runs, "--port", str(port)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(port)
        print(f"$ python scripts/bench_serve.py {' '.join(sys.argv[1:])}")
        print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, server: 1 uvicorn process, "
              f"{args.server_threads} torch thread(s); clients: threads in this process, keep-alive\n")
        print("| run | catalogue | clients | requests | req/s | p50 ms | p95 ms | p99 ms | errors |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for run in args.run:
            for clients in args.clients:
                r = bench_run(port, run, clients, args.seconds)
                print(f"| {run} | {r['dataset']} | {clients} | {r['requests']:,} | {r['rps']:.0f} | {r['p50']:.1f} | "
                      f"{r['p95']:.1f} | {r['p99']:.1f} | {r['errors']} |", flush=True)
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
