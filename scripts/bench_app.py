"""Dashboard responsiveness in a real browser, and the dashboard under load (headless Chromium driven by playwright).

    python scripts/bench_app.py [--port 8599] [--repeats 3]
    python scripts/bench_app.py --sessions 20 [--rounds 3] [--port 8599]

Responsiveness (default), on the shipped checkpoints and the embedded ML-100K:
- first page rendered: from `streamlit run` starting to the answer page (the default) having finished running;
- page switches: clicking a page in the sidebar until it has finished running (each page visited twice: the first
  visit fills the caches, the second is what a person switching back and forth sees);
- a live re-score: moving the what-if gap slider on Live recommendations until the new list is shown.
- the answer page on a restarted server: a second `streamlit run`, timed from the page's request (its bootstraps
  come from the disk cache the first server filled).
Prints a table with the targets (8 s, 1.5 s, 300 ms, 3 s).

Load (--sessions N): N concurrent dashboard sessions against one `streamlit run streamlit_app.py` on 127.0.0.1, each
a headless Chromium page in its own browser context, i.e. its own websocket session with the server, all open for
the whole run. Session i opens its first page by URL (/ for the answer, /explore-movielens, /compare-runs,
/what-matters, /state-trajectories, /live-recommendations, in turn by i), then goes through the six pages with the
sidebar links, --rounds times; all sessions move at once and every round ends before the next starts. After each page
has finished running, it must show no exception, no st.error box, no "Traceback", no "Connection error" and no "Page not
found". The server's resident memory (VmRSS of the streamlit process, /proc/PID/status) is sampled every 0.25 s.
Passes when every page view is error-free, the server is alive and healthy at the end, its RSS grew by at most
--max-growth-mb between the end of the first round (caches filled) and the end of the last, and its peak stayed
under --max-rss-mb.
Bounded: each page has --page-timeout seconds, the whole run --max-seconds; then it stops and reports what it got.

Needs Debian's chromium at /usr/bin/chromium (--chromium) and the playwright package (never `playwright install`).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[1]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run"]
IDLE = """() => !document.querySelector('[data-testid="stStatusWidget"]') &&
               !document.querySelector('[data-testid="stSpinner"]')"""
# (URL path, navigation title, page heading). The answer is the default page, served at the root URL ("" here); a
# hidden alias page opens it at /answer too (streamlit_app.py).
PAGES = [("", "The answer", "Does SS4Rec beat its baselines?"),
         ("explore-movielens", "Explore MovieLens", "Explore MovieLens"),
         ("compare-runs", "Compare runs", "Compare runs"),
         ("what-matters", "What matters", "What matters"),
         ("state-trajectories", "State trajectories", "State trajectories"),
         ("live-recommendations", "Live recommendations", "Live recommendations")]
HEADING = {title: heading for _, title, heading in PAGES}
MARKERS = ("Traceback", "Connection error", "Page not found")
ERRORS = '[data-testid="stException"], [data-testid="stAlertContentError"]'


def nav_link(page, title: str):
    """The sidebar's navigation link to a page (the answer page also links to the others in its text)."""
    return page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name=title, exact=True)


def wait_idle(page, timeout=120_000):
    page.wait_for_timeout(150)  # let the rerun start before waiting for it to end
    page.wait_for_function(IDLE, timeout=timeout)


def start_server(port: int, env: dict) -> subprocess.Popen:
    """`streamlit run streamlit_app.py` on 127.0.0.1:port, returned once its health check answers (60 s at most)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.port", str(port),
                             "--server.address", "127.0.0.1", "--server.headless", "true",
                             "--browser.gatherUsageStats", "false"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not healthy(f"http://127.0.0.1:{port}"):
        if proc.poll() is not None:
            sys.exit(f"streamlit exited with {proc.returncode} before answering")
        if time.perf_counter() - t0 > 60:
            stop_server(proc)
            sys.exit("streamlit did not start within 60 s")
        time.sleep(0.1)
    return proc


def healthy(url: str) -> bool:
    try:
        return urllib.request.urlopen(url + "/_stcore/health", timeout=2).read() == b"ok"
    except OSError:
        return False


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def server_env() -> dict:
    env = {**os.environ, "RECSYS_CACHE_DIR": os.environ.get("RECSYS_CACHE_DIR", tempfile.mkdtemp())}
    # warm the processed-data cache once, as a returning user has it (the very first load validates the files)
    subprocess.run([sys.executable, "-m", "recsys.data", "info"], cwd=ROOT, env=env, capture_output=True, check=True)
    return env


# ------------------------------------------------------------------------------------------------ responsiveness
def restarted(args, env: dict) -> float:
    """A fresh server on the folder the previous one has seen: from the page's request to the answer page having
    finished running (the verdicts' bootstraps come from Streamlit's disk cache, keyed by the runs' stamps)."""
    from playwright.sync_api import sync_playwright

    proc = start_server(args.port, env)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, args=FLAGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            t = time.perf_counter()
            page.goto(f"http://127.0.0.1:{args.port}/")
            page.get_by_role("heading", name=HEADING["The answer"]).first.wait_for(timeout=60_000)
            wait_idle(page)
            seconds = time.perf_counter() - t
            browser.close()
    finally:
        stop_server(proc)
    return seconds


def responsiveness(args) -> int:
    from playwright.sync_api import sync_playwright

    env = server_env()
    t_start = time.perf_counter()
    proc = start_server(args.port, env)
    url = f"http://127.0.0.1:{args.port}"
    rows = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, args=FLAGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url + "/")
            page.get_by_role("heading", name=HEADING["The answer"]).first.wait_for(timeout=60_000)
            wait_idle(page)
            first = time.perf_counter() - t_start
            rows.append(("first page rendered after `streamlit run`", first, 8.0, "s"))
            wait_idle(page)
            switch = {}
            for rep in range(args.repeats + 1):
                for name in ("Compare runs", "State trajectories", "Live recommendations", "Explore MovieLens",
                             "The answer"):
                    t = time.perf_counter()
                    nav_link(page, name).click()
                    page.get_by_role("heading", name=HEADING[name]).first.wait_for(timeout=120_000)
                    wait_idle(page)
                    if rep:  # the first round fills the caches
                        switch.setdefault(name, []).append(time.perf_counter() - t)
            for name, times in switch.items():
                rows.append((f"switch to {name} (median of {len(times)})", statistics.median(times), 1.5, "s"))
            nav_link(page, "Live recommendations").click()
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
        stop_server(proc)
    rows.append(("answer page on a restarted server (its bootstraps cached on disk)", restarted(args, env), 3.0,
                 "s"))
    print(f"$ python scripts/bench_app.py {' '.join(sys.argv[1:])}")
    print("headless Chromium, streamlit on 127.0.0.1, shipped checkpoints, embedded ML-100K\n")
    print("| measurement | seconds | target | met |")
    print("| --- | --- | --- | --- |")
    for name, value, target, _ in rows:
        print(f"| {name} | {value:.2f} | < {target:g} | {'yes' if value < target else 'NO'} |")
    return 0


# ------------------------------------------------------------------------------------------------ load
class RssSampler(threading.Thread):
    """VmRSS of one process (kB from /proc/PID/status) every `every` seconds until stopped or the process is gone."""

    def __init__(self, pid: int, every: float = 0.25):
        super().__init__(daemon=True)
        self.pid, self.every, self.samples = pid, every, []
        self._stop_event = threading.Event()

    def read(self) -> int | None:
        try:
            with open(f"/proc/{self.pid}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
        return None

    def run(self) -> None:
        while not self._stop_event.is_set():
            rss = self.read()
            if rss is None:
                return
            self.samples.append((time.perf_counter(), rss))
            self._stop_event.wait(self.every)

    def cpu_seconds(self) -> float | None:
        """User + system CPU time of the process so far (/proc/PID/stat), or None when it is gone."""
        try:
            with open(f"/proc/{self.pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            return None

    def stop(self) -> None:
        self._stop_event.set()
        self.join(5)

    def peak(self) -> int:
        return max((r for _, r in self.samples), default=0)


async def settle(page, timeout: float) -> float:
    """Wait until the page's script run has ended (no running indicator, no spinner) and its text has not changed
    for 1 s; returns the time (perf_counter) at which the run was seen to end."""
    t0 = time.perf_counter()
    await page.wait_for_timeout(150)  # let the rerun start before waiting for it to end
    await page.wait_for_function(IDLE, timeout=timeout * 1000)
    ready = time.perf_counter()
    last, stable = None, 0
    while stable < 2:
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError(f"the page kept changing for {timeout:.0f} s")
        await page.wait_for_timeout(500)
        busy = await page.locator('[data-testid="stStatusWidget"], [data-testid="stSpinner"]').count()
        text = await page.inner_text("body")
        stable = stable + 1 if (text == last and not busy) else 0
        last = text
    return ready


async def page_problems(page) -> list[str]:
    problems = []
    errors = page.locator(ERRORS)
    for k in range(await errors.count()):
        problems.append((await errors.nth(k).inner_text())[:300])
    body = await page.inner_text("body")
    for marker in MARKERS:
        if marker in body:
            problems.append(f"{marker!r} on the page")
    return problems


async def visit(session, index: int, round_no: int, path: str, title: str, heading: str, url: str,
                timeout: float) -> dict:
    page = session["page"]
    t = time.perf_counter()
    view = {"session": index, "round": round_no, "page": path, "problems": []}
    try:
        if session["opened"]:
            await nav_link(page, title).click(
                timeout=timeout * 1000)
        else:
            await page.goto(f"{url}/{path}", timeout=timeout * 1000)
            session["opened"] = True
        await page.wait_for_url(lambda u: urlparse(u).path.strip("/") == path, timeout=timeout * 1000)
        await page.locator("h1", has_text=heading).first.wait_for(timeout=timeout * 1000)
        view["ready"] = await settle(page, timeout) - t
        view["problems"] = await page_problems(page)
        if await page.locator('[role="dialog"]').count():  # a modal makes the page inert: close it, go on
            await page.keyboard.press("Escape")
    except Exception as exc:  # a timeout or a crashed page is a failed view, reported, not a crash of the bench
        view["problems"].append(f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
    view["seconds"] = time.perf_counter() - t
    return view


async def session_round(session, index: int, round_no: int, url: str, timeout: float, views: list) -> None:
    for k in range(len(PAGES)):
        path, title, heading = PAGES[(index + k) % len(PAGES)]
        views.append(await visit(session, index, round_no, path, title, heading, url, timeout))


async def first_deep_link(browser, url: str, timeout: float) -> list[str]:
    """The server's very first session opens /compare-runs by URL: what does it show?"""
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        view = await visit({"page": await context.new_page(), "opened": False}, -1, 0, "compare-runs",
                           "Compare runs", "Compare runs", url, timeout)
    finally:
        await context.close()
    return view["problems"]


async def load_async(args, url: str, sampler: RssSampler) -> dict:
    from playwright.async_api import async_playwright

    deadline = time.perf_counter() + args.max_seconds
    out = {"views": [], "round_end_rss": [], "rounds_done": 0, "stopped": None}
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=args.chromium, args=FLAGS)
        out["first_deep_link"] = await first_deep_link(browser, url, args.page_timeout)
        sessions = []
        for _ in range(args.sessions):
            context = await browser.new_context(viewport={"width": 1280, "height": 900})
            sessions.append({"context": context, "page": await context.new_page(), "opened": False})
        try:
            for r in range(args.rounds):
                left = deadline - time.perf_counter()
                if left <= 0:
                    out["stopped"] = f"--max-seconds {args.max_seconds:g} reached before round {r + 1}"
                    break
                jobs = [session_round(s, i, r + 1, url, args.page_timeout, out["views"])
                        for i, s in enumerate(sessions)]
                try:
                    await asyncio.wait_for(asyncio.gather(*jobs), timeout=left)
                except TimeoutError:
                    out["stopped"] = f"--max-seconds {args.max_seconds:g} reached during round {r + 1}"
                    break
                out["round_end_rss"].append(sampler.read() or 0)
                out["rounds_done"] = r + 1
        finally:
            for s in sessions:
                await s["context"].close()
            await browser.close()
    return out


def per_page(views: list[dict], path: str) -> str:
    times = sorted(v["ready"] for v in views if v["page"] == path and "ready" in v)
    return f"{statistics.median(times):.2f} s / {times[-1]:.2f} s" if times else "n/a"


def load(args) -> int:
    env = server_env()
    proc = start_server(args.port, env)
    url = f"http://127.0.0.1:{args.port}"
    sampler = RssSampler(proc.pid)
    sampler.start()
    t0 = time.perf_counter()
    try:
        idle_rss = sampler.read() or 0
        cpu0, t_load = sampler.cpu_seconds() or 0.0, time.perf_counter()
        result = asyncio.run(load_async(args, url, sampler))
        server_cpu, load_wall = (sampler.cpu_seconds() or 0.0) - cpu0, time.perf_counter() - t_load
        time.sleep(2)  # the sessions' websockets are closed: let the server drop them
        after_close_rss = sampler.read() or 0
        alive = proc.poll() is None and healthy(url)
    finally:
        sampler.stop()
        stop_server(proc)
    wall = time.perf_counter() - t0
    views = result["views"]
    planned = args.sessions * args.rounds * len(PAGES)
    bad = [v for v in views if v["problems"]]
    ready = sorted(v["ready"] for v in views if "ready" in v)
    # what a person switching pages sees once the caches are warm: sidebar clicks after the first round
    switches = sorted(v["ready"] for v in views if "ready" in v and v["round"] > 1)
    switch_target = 1.5 if args.sessions <= 5 else 3.0  # the dashboard issue's targets (5 and 20 sessions)
    rss_mb = [r / 2**20 for r in result["round_end_rss"]]
    peak_mb = max([sampler.peak(), idle_rss, after_close_rss, *result["round_end_rss"]]) / 2**20
    growth = rss_mb[-1] - rss_mb[0] if len(rss_mb) >= 2 else None
    mb = lambda x: f"{x:,.0f} MB"  # noqa: E731
    deep = result.get("first_deep_link") or []
    rows = [
        ("the server's first session opens /compare-runs by URL (before anyone opened /)",
         "; ".join(deep) if deep else "no problem", "informational", None),
        ("concurrent dashboard sessions (one headless Chromium context and websocket session each)",
         f"{args.sessions}", "", None),
        (f"page views completed ({args.rounds} rounds x {len(PAGES)} pages x {args.sessions} sessions)",
         f"{len(views)} of {planned}", f"{planned}", len(views) == planned and not result["stopped"]),
        ("page views with an error (exception, st.error, Traceback, connection error, page not found, timeout)",
         f"{len(bad)}", "0", not bad),
        ("page ready under load (navigation to end of script run): median / max",
         f"{statistics.median(ready):.2f} s / {ready[-1]:.2f} s" if ready else "n/a",
         f"< {args.page_timeout:g} s each", bool(ready) and ready[-1] < args.page_timeout),
        *[(f"  of which {'/' + path}: median / max", per_page(views, path), "", None) for path, _, _ in PAGES],
        ("page switch under load (sidebar clicks after round 1, caches warm): median / max",
         f"{statistics.median(switches):.2f} s / {switches[-1]:.2f} s" if switches else "n/a (one round)",
         f"median <= {switch_target:g} s", (statistics.median(switches) <= switch_target) if switches else None),
        ("server RSS before the first session", mb(idle_rss / 2**20), "", None),
        ("server RSS peak (sampled every 0.25 s)", mb(peak_mb), f"< {args.max_rss_mb:,.0f} MB",
         peak_mb < args.max_rss_mb),
        ("server RSS at the end of each round", " / ".join(mb(x) for x in rss_mb) or "n/a", "", None),
        (f"growth from the end of round 1 to the end of round {max(len(rss_mb), 1)}",
         f"{growth:+,.0f} MB" if growth is not None else "n/a (fewer than 2 rounds)",
         f"<= {args.max_growth_mb:g} MB", growth is None or growth <= args.max_growth_mb),
        ("server RSS 2 s after every session closed", mb(after_close_rss / 2**20), "", None),
        ("server alive and healthy at the end", "yes" if alive else "NO", "yes", alive),
        ("server CPU time during the sessions (the browsers share the same cores)",
         f"{server_cpu:.0f} s in {load_wall:.0f} s ({server_cpu / max(load_wall, 1e-9):.2f} cores busy on average)", "",
         None),
        ("wall time of the load run", f"{wall:.0f} s", f"< {args.max_seconds:g} s + start-up", None),
    ]
    print(f"$ python scripts/bench_app.py {' '.join(sys.argv[1:])}")
    print(f"{args.sessions} concurrent sessions, headless Chromium, streamlit on 127.0.0.1, shipped checkpoints, "
          f"embedded ML-100K, {os.cpu_count()} CPU cores\n")
    print("| measurement | value | bound | met |")
    print("| --- | --- | --- | --- |")
    for name, value, bound, met in rows:
        print(f"| {name} | {value} | {bound} | {'' if met is None else ('yes' if met else 'NO')} |")
    if any("Page not found" in d for d in deep):
        print("\nnote: the very first session of a freshly started server that opens a page other than / by its URL "
              "gets Streamlit's 'Page not found' dialog over the right page (st.navigation knows the pages only once "
              "the app script has run; cf. streamlit/streamlit#9624). Sessions after it are not affected; the load "
              "figures above start after that first session.")
    if result["stopped"]:
        print(f"\nstopped early: {result['stopped']}")
    for v in bad[:10]:
        print(f"\nsession {v['session']}, round {v['round']}, /{v['page']}: {'; '.join(v['problems'])}")
    # PASS is about correctness and memory; the switch-time target is reported (met: yes / NO), never a failure, as
    # the same two cores also run the browsers
    ok = all(met is not False for name, *_, met in rows if not name.startswith("page switch under load"))
    print(f"\nload test: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=8599)
    ap.add_argument("--repeats", type=int, default=3, help="responsiveness: timed visits of each page")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--sessions", type=int, help="load test with this many concurrent sessions")
    ap.add_argument("--rounds", type=int, default=3, help="load: visits of the four pages per session")
    ap.add_argument("--page-timeout", type=float, default=180, help="load: seconds a page may take")
    ap.add_argument("--max-seconds", type=float, default=1200, help="load: the whole run stops after this")
    ap.add_argument("--max-growth-mb", type=float, default=100,
                    help="load: allowed server RSS growth from the end of round 1 to the end of the last")
    ap.add_argument("--max-rss-mb", type=float, default=4096, help="load: allowed server RSS peak")
    args = ap.parse_args()
    if args.sessions is not None and (args.sessions < 1 or args.rounds < 1):
        ap.error("--sessions and --rounds must be at least 1")
    sys.exit(load(args) if args.sessions else responsiveness(args))


if __name__ == "__main__":
    main()
