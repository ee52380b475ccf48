"""Dashboard responsiveness in a real browser (headless Chromium driven by playwright).

    python scripts/bench_app.py [--port 8599] [--repeats 3]

Measures, on the shipped checkpoints and the embedded ML-100K:
- first page rendered: from `streamlit run` starting to the Explore page's headline numbers being on screen;
- page switches: clicking a page in the sidebar until it has finished running (each page visited twice: the first
  visit fills the caches, the second is what a person switching back and forth sees);
- a live re-score: moving the what-if gap slider on Live recommendations until the new list is shown.
Prints a table with the targets (8 s, 1.5 s, 300 ms). Needs Debian's chromium at /usr/bin/chromium.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run"]
IDLE = """() => !document.querySelector('[data-testid="stStatusWidget"]') &&
               !document.querySelector('[data-testid="stSpinner"]')"""


def wait_idle(page, timeout=120_000):
    page.wait_for_timeout(150)  # let the rerun start before waiting for it to end
    page.wait_for_function(IDLE, timeout=timeout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=8599)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    env = {**os.environ, "RECSYS_CACHE_DIR": os.environ.get("RECSYS_CACHE_DIR", tempfile.mkdtemp())}
    # warm the processed-data cache once, as a returning user has it (the very first load validates the files)
    subprocess.run([sys.executable, "-m", "recsys.data", "info"], cwd=ROOT, env=env, capture_output=True, check=True)
    t_start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.port",
                             str(args.port), "--server.address", "127.0.0.1", "--server.headless", "true"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{args.port}"
    rows = []
    try:
        while True:
            try:
                if urllib.request.urlopen(url + "/_stcore/health", timeout=1).read() == b"ok":
                    break
            except OSError:
                time.sleep(0.1)
            if time.perf_counter() - t_start > 60:
                sys.exit("streamlit did not start within 60 s")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, args=FLAGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url + "/")
            page.get_by_text("100,000").first.wait_for(timeout=60_000)
            first = time.perf_counter() - t_start
            rows.append(("first page rendered after `streamlit run`", first, 8.0, "s"))
            wait_idle(page)
            switch = {}
            for rep in range(args.repeats + 1):
                for name in ("Compare runs", "State trajectories", "Live recommendations", "Explore MovieLens"):
                    t = time.perf_counter()
                    page.get_by_role("link", name=name).click()
                    page.get_by_role("heading", name=name).first.wait_for(timeout=120_000)
                    wait_idle(page)
                    if rep:  # the first round fills the caches
                        switch.setdefault(name, []).append(time.perf_counter() - t)
            for name, times in switch.items():
                rows.append((f"switch to {name} (median of {len(times)})", statistics.median(times), 1.5, "s"))
            page.get_by_role("link", name="Live recommendations").click()
            page.get_by_role("heading", name="Live recommendations").first.wait_for()
            wait_idle(page)
            slider = page.get_by_role("slider").first
            rescores = []
            caption = page.get_by_text("after the last one").first  # names the gap: changes with every move
            for key in ["ArrowRight", "ArrowRight", "ArrowLeft", "ArrowLeft"] * args.repeats:
                before = caption.inner_text()
                slider.focus()
                t = time.perf_counter()
                slider.press(key)
                page.wait_for_function(
                    """(before) => [...document.querySelectorAll('[data-testid="stCaptionContainer"]')]
                         .some(e => e.innerText.includes('after the last one') && e.innerText !== before)""",
                    arg=before, timeout=60_000)
                rescores.append(time.perf_counter() - t)
                wait_idle(page)
            rows.append((f"live re-score after moving the gap slider (median of {len(rescores)})",
                         statistics.median(rescores), 0.3, "s"))
            browser.close()
    finally:
        proc.terminate()
    print(f"$ python scripts/bench_app.py {' '.join(sys.argv[1:])}")
    print("headless Chromium, streamlit on 127.0.0.1, shipped checkpoints, embedded ML-100K\n")
    print("| measurement | seconds | target | met |")
    print("| --- | --- | --- | --- |")
    for name, value, target, _ in rows:
        print(f"| {name} | {value:.2f} | < {target:g} | {'yes' if value < target else 'NO'} |")


if __name__ == "__main__":
    main()
