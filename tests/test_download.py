"""recsys.data.download against a loopback HTTP server: never touches the internet."""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import os
import socket
import threading
import zipfile
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from recsys.data import download as dl
from recsys.data.download import RELEASES, default_data_root, download_release, main
from recsys.data.schema import DataUnavailableError, DataValidationError

RATINGS = b"userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.0,964981247\n2,1,5.0,964982224\n"
MOVIES = b"movieId,title,genres\n1,Toy Story (1995),Adventure|Animation\n3,Grumpier Old Men (1995),Comedy\n"


def make_zip(path: Path, members: dict[str, bytes]) -> str:
    """Write a zip with the given members; return its md5."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    data = buf.getvalue()
    path.write_bytes(data)
    return hashlib.md5(data).hexdigest()


def movielens_members(folder: str) -> dict[str, bytes]:
    return {f"{folder}/ratings.csv": RATINGS, f"{folder}/movies.csv": MOVIES}


class _Handler(SimpleHTTPRequestHandler):
    """Serves the test directory; records every request; per-path misbehaviour from server.modes."""

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):  # noqa: N802
        srv = self.server
        srv.requests.append(self.path)
        mode = srv.modes.get(self.path)
        if mode == "truncate":
            data = (Path(self.directory) / self.path.lstrip("/")).read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "application/zip")
            self.send_header("Content-Length", str(len(data) + 10_000))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        if mode == "hang":
            srv.release.wait(10)
            return
        if mode == "trickle":  # one byte every 0.05 s: every read succeeds well inside the per-read timeout
            data = (Path(self.directory) / self.path.lstrip("/")).read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "application/zip")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            for b in data:
                if srv.release.wait(0.05):
                    return
                try:
                    self.wfile.write(bytes([b]))
                    self.wfile.flush()
                except OSError:
                    return
            return
        super().do_GET()


@dataclasses.dataclass
class Server:
    httpd: ThreadingHTTPServer
    directory: Path

    @property
    def base_url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/datasets"

    @property
    def requests(self) -> list[str]:
        return self.httpd.requests

    @property
    def modes(self) -> dict[str, str]:
        return self.httpd.modes

    def add_release(self, filename: str, members: dict[str, bytes], sidecar: str | None = "plain") -> str:
        """Put datasets/<filename> (and, unless sidecar is None, its .md5) on the server; return the md5."""
        md5 = make_zip(self.directory / filename, members)
        if sidecar == "plain":
            (self.directory / f"{filename}.md5").write_text(f"{md5}  {filename}\n")
        elif sidecar == "bsd":
            (self.directory / f"{filename}.md5").write_text(f"MD5 ({filename}) = {md5}\n")
        elif sidecar is not None:
            (self.directory / f"{filename}.md5").write_text(sidecar)
        return md5


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("RECSYS_DATA_DIR", str(tmp_path / "default-root"))


@pytest.fixture
def server(tmp_path):
    served = tmp_path / "srv"
    (served / "datasets").mkdir(parents=True)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(served)))
    httpd.requests = []
    httpd.modes = {}
    httpd.release = threading.Event()
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield Server(httpd, served / "datasets")
    finally:
        httpd.release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture
def root(tmp_path) -> Path:
    return tmp_path / "data"


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def pin(monkeypatch, name: str, md5: str) -> None:
    monkeypatch.setitem(RELEASES, name, dataclasses.replace(RELEASES[name], md5=md5))


def closed_port_url() -> str:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}/datasets"


# ------------------------------------------------------------------------------------------------ success


@pytest.mark.parametrize("sidecar", ["plain", "bsd"])
def test_download_verifies_against_sidecar_and_extracts(server, root, sidecar):
    md5 = server.add_release("ml-latest-small.zip", movielens_members("ml-latest-small"), sidecar=sidecar)
    folder = download_release("ml-latest-small", root=root, base_url=server.base_url, progress=False)
    assert folder == root / "ml-latest-small"
    assert (folder / "ratings.csv").read_bytes() == RATINGS
    assert (folder / "movies.csv").read_bytes() == MOVIES
    assert (folder / ".complete").read_text().split()[0] == md5
    assert server.requests == ["/datasets/ml-latest-small.zip.md5", "/datasets/ml-latest-small.zip"]
    assert leftovers(root) == ["ml-latest-small"]  # no temp files, no zip


def test_second_call_is_offline(server, root):
    server.add_release("ml-latest-small.zip", movielens_members("ml-latest-small"))
    first = download_release("ml-latest-small", root=root, base_url=server.base_url, progress=False)
    n = len(server.requests)
    again = download_release("ml-latest-small", root=root, base_url=server.base_url, progress=False)
    assert again == first and len(server.requests) == n
    # even with no network at all
    assert download_release("ml-latest-small", root=root, base_url=closed_port_url()) == first


def test_pinned_md5_needs_no_sidecar(server, root, monkeypatch):
    md5 = server.add_release("ml-1m.zip", movielens_members("ml-1m"), sidecar=None)
    pin(monkeypatch, "ml-1m", md5)
    folder = download_release("ml-1m", root=root, base_url=server.base_url, progress=True)
    assert folder == root / "ml-1m" and (folder / "ratings.csv").read_bytes() == RATINGS
    assert server.requests == ["/datasets/ml-1m.zip"]
    assert (folder / ".complete").read_text().split()[0] == md5


def test_archive_dir_is_normalised(server, root, monkeypatch):
    md5 = server.add_release("ml-10m.zip", movielens_members("ml-10M100K"), sidecar=None)
    pin(monkeypatch, "ml-10m", md5)
    folder = download_release("ML-10M", root=root, base_url=server.base_url, progress=False)
    assert folder == root / "ml-10m" and (folder / "movies.csv").read_bytes() == MOVIES
    assert leftovers(root) == ["ml-10m"]


def test_keep_archive(server, root, monkeypatch):
    md5 = server.add_release("ml-1m.zip", movielens_members("ml-1m"), sidecar=None)
    pin(monkeypatch, "ml-1m", md5)
    download_release("ml-1m", root=root, base_url=server.base_url, progress=False, keep_archive=True)
    assert leftovers(root) == ["ml-1m", "ml-1m.zip"]
    assert hashlib.md5((root / "ml-1m.zip").read_bytes()).hexdigest() == md5


def test_default_root_and_registry(monkeypatch, tmp_path):
    assert default_data_root() == tmp_path / "default-root"
    monkeypatch.delenv("RECSYS_DATA_DIR")
    assert default_data_root() == Path.home() / ".cache" / "ss4rec-workbench" / "movielens"
    assert RELEASES["ml-10m"].archive_dir == "ml-10M100K"
    assert RELEASES["ml-1m"].md5 == "c4d9eecfca2ab87c1945afe126590906"
    assert RELEASES["ml-latest"].md5 is None
    for name, rel in RELEASES.items():
        assert rel.name == name and rel.url == f"https://files.grouplens.org/datasets/movielens/{name}.zip"


# ------------------------------------------------------------------------------------------------ failures


def test_wrong_pinned_md5_leaves_nothing(server, root, monkeypatch):
    md5 = server.add_release("ml-1m.zip", movielens_members("ml-1m"), sidecar=None)
    pin(monkeypatch, "ml-1m", "0" * 32)
    with pytest.raises(DataValidationError) as err:
        download_release("ml-1m", root=root, base_url=server.base_url, progress=False)
    msg = str(err.value)
    assert "0" * 32 in msg and md5 in msg and f"{server.base_url}/ml-1m.zip" in msg
    assert leftovers(root) == []


def test_wrong_sidecar_md5_leaves_nothing(server, root):
    server.add_release("ml-latest-small.zip", movielens_members("ml-latest-small"), sidecar="f" * 32 + "\n")
    with pytest.raises(DataValidationError, match="f" * 32):
        download_release("ml-latest-small", root=root, base_url=server.base_url, progress=False)
    assert leftovers(root) == []


def test_connection_dropped_mid_body_leaves_nothing(server, root):
    server.add_release("ml-latest-small.zip", movielens_members("ml-latest-small"))
    server.modes["/datasets/ml-latest-small.zip"] = "truncate"
    with pytest.raises(DataUnavailableError, match="cut off"):
        download_release("ml-latest-small", root=root, base_url=server.base_url, progress=False)
    assert leftovers(root) == []


def test_connection_refused_says_no_network(root):
    url = closed_port_url()
    with pytest.raises(DataUnavailableError) as err:
        download_release("ml-1m", root=root, base_url=url, progress=False)
    msg = str(err.value)
    assert "No network" in msg and "--data-dir" in msg and f"{url}/ml-1m.zip" in msg
    assert leftovers(root) == []


def test_connection_refused_on_sidecar_says_no_network(root):
    with pytest.raises(DataUnavailableError, match="--data-dir"):
        download_release("ml-latest", root=root, base_url=closed_port_url(), progress=False)
    assert leftovers(root) == []


def test_timeout_says_no_network(server, root, monkeypatch):
    server.add_release("ml-1m.zip", movielens_members("ml-1m"), sidecar=None)
    pin(monkeypatch, "ml-1m", "0" * 32)
    server.modes["/datasets/ml-1m.zip"] = "hang"
    with pytest.raises(DataUnavailableError, match="No network.*--data-dir"):
        download_release("ml-1m", root=root, base_url=server.base_url, progress=False, timeout=0.3)
    assert leftovers(root) == []


def test_http_404(server, root):
    with pytest.raises(DataUnavailableError, match="404"):
        download_release("ml-100k", root=root, base_url=server.base_url, progress=False)
    assert leftovers(root) == []


def test_unknown_name_lists_known():
    with pytest.raises(DataUnavailableError) as err:
        download_release("ml-7m")
    assert "ml-7m" in str(err.value)
    assert all(name in str(err.value) for name in RELEASES)


def test_zip_slip_refused(server, root, tmp_path):
    members = movielens_members("ml-latest-small")
    members["ml-latest-small/../../evil.txt"] = b"pwned"
    server.add_release("ml-latest-small.zip", members)
    with pytest.raises(DataValidationError, match="zip-slip"):
        download_release("ml-latest-small", root=root, base_url=server.base_url, progress=False)
    assert leftovers(root) == []
    assert not (tmp_path / "evil.txt").exists() and not (root.parent / "evil.txt").exists()


def test_absolute_member_refused(server, root):
    members = movielens_members("ml-latest-small")
    members["/tmp/evil.txt"] = b"pwned"
    server.add_release("ml-latest-small.zip", members)
    with pytest.raises(DataValidationError, match="zip-slip"):
        download_release("ml-latest-small", root=root, base_url=server.base_url, progress=False)
    assert leftovers(root) == []


def test_bad_zip_leaves_nothing(server, root, monkeypatch):
    garbage = b"this is not a zip archive" * 10
    (server.directory / "ml-1m.zip").write_bytes(garbage)
    pin(monkeypatch, "ml-1m", hashlib.md5(garbage).hexdigest())
    with pytest.raises(DataValidationError, match="not a valid zip"):
        download_release("ml-1m", root=root, base_url=server.base_url, progress=False)
    assert leftovers(root) == []


def test_wrong_archive_dir_leaves_nothing(server, root, monkeypatch):
    md5 = server.add_release("ml-1m.zip", movielens_members("something-else"), sidecar=None)
    pin(monkeypatch, "ml-1m", md5)
    with pytest.raises(DataValidationError, match="something-else"):
        download_release("ml-1m", root=root, base_url=server.base_url, progress=False)
    assert leftovers(root) == []


def test_missing_sidecar_refused_unless_allow_unverified(server, root):
    md5 = server.add_release("ml-latest-small.zip", movielens_members("ml-latest-small"), sidecar=None)
    with pytest.raises(DataUnavailableError, match="allow_unverified"):
        download_release("ml-latest-small", root=root, base_url=server.base_url, progress=False)
    assert leftovers(root) == []
    assert "/datasets/ml-latest-small.zip" not in server.requests  # refused before downloading
    folder = download_release("ml-latest-small", root=root, base_url=server.base_url, progress=False,
                              allow_unverified=True)
    marker = (folder / ".complete").read_text()
    assert marker.split()[0] == md5 and "unverified" in marker


def test_sidecar_without_md5_is_no_sidecar(server, root):
    server.add_release("ml-latest-small.zip", movielens_members("ml-latest-small"), sidecar="<html>oops</html>")
    with pytest.raises(DataUnavailableError, match="Cannot verify"):
        download_release("ml-latest-small", root=root, base_url=server.base_url, progress=False)


def test_keyboard_interrupt_leaves_nothing(server, root, monkeypatch):
    server.add_release("ml-latest-small.zip", movielens_members("ml-latest-small"))

    class InterruptingBar:
        def update(self, n):
            raise KeyboardInterrupt

        def close(self):
            pass

    monkeypatch.setattr(dl, "_progress_bar", lambda *a, **k: InterruptingBar())
    with pytest.raises(KeyboardInterrupt):
        download_release("ml-latest-small", root=root, base_url=server.base_url)
    assert leftovers(root) == []


def test_incomplete_existing_folder_is_not_touched(server, root):
    server.add_release("ml-latest-small.zip", movielens_members("ml-latest-small"))
    (root / "ml-latest-small").mkdir(parents=True)
    (root / "ml-latest-small" / "ratings.csv").write_bytes(b"mine")
    with pytest.raises(DataValidationError, match=r"\.complete"):
        download_release("ml-latest-small", root=root, base_url=server.base_url, progress=False)
    assert (root / "ml-latest-small" / "ratings.csv").read_bytes() == b"mine"
    assert server.requests == []


# ----------------------------------------------------------------------------------------------------- CLI


def test_cli(server, root, capsys):
    server.add_release("ml-latest-small.zip", movielens_members("ml-latest-small"))
    assert main(["ml-latest-small", "--root", str(root), "--base-url", server.base_url, "--no-progress"]) == 0
    assert capsys.readouterr().out.strip() == str(root / "ml-latest-small")
    assert main(["ml-7m", "--root", str(root)]) == 1
    assert "Known releases" in capsys.readouterr().err


# ------------------------------------------------------------------------------- issue 26: mirrors and disks that fail
def test_a_trickling_mirror_is_abandoned_not_waited_on_for_good(server, root, monkeypatch):
    server.add_release("ml-latest-small.zip", movielens_members("ml-latest-small"))
    server.modes["/datasets/ml-latest-small.zip"] = "trickle"
    monkeypatch.setattr(dl, "_RATE_WINDOW", 0.6)
    monkeypatch.setattr(dl, "_MIN_RATE", 1024)
    with pytest.raises(DataUnavailableError, match=r"stalled: \d+ bytes in the last 1 s .*--data-dir"):
        download_release("ml-latest-small", root=root, base_url=server.base_url, progress=False, timeout=5)
    assert leftovers(root) == []


def test_what_a_killed_download_left_is_removed_by_the_next(server, root):
    import subprocess

    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid that no longer runs
    root.mkdir(parents=True)
    (root / f".tmp-{dead.pid}-ml-latest-small.zip.abc.part").write_bytes(b"x" * 1000)
    (root / f".tmp-{dead.pid}-ml-latest-small.def").mkdir()
    live = root / f".tmp-{os.getppid()}-ml-latest-small.zip.ghi.part"  # a download still running elsewhere
    live.write_bytes(b"y")
    server.add_release("ml-latest-small.zip", movielens_members("ml-latest-small"))
    download_release("ml-latest-small", root=root, base_url=server.base_url, progress=False)
    assert leftovers(root) == sorted([live.name, "ml-latest-small"])


def test_a_full_disk_while_unpacking_is_a_message_and_leaves_nothing(server, root, monkeypatch):
    import errno

    server.add_release("ml-latest-small.zip", movielens_members("ml-latest-small"))

    def full(self, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(zipfile.ZipFile, "extractall", full)
    with pytest.raises(DataUnavailableError, match=r"Cannot unpack ml-latest-small.zip into .*No space left on device"):
        download_release("ml-latest-small", root=root, base_url=server.base_url, progress=False)
    assert leftovers(root) == []
