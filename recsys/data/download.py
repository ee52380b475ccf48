"""Download, verify and unpack the GroupLens MovieLens releases.

    from recsys.data.download import download_release
    folder = download_release("ml-1m")          # -> ~/.cache/ss4rec-workbench/movielens/ml-1m

    python -m recsys.data.download ml-1m [--root DIR]

Guarantees:
  * every archive is checked against an md5 before anything is unpacked: the pinned one in RELEASES, or, for
    the releases GroupLens rebuilds (ml-latest*), the `<url>.md5` sidecar GroupLens publishes; without a
    checksum the download is refused unless the caller passes allow_unverified=True;
  * the archive is streamed (md5 computed on the way) to a temp file in the root directory, unpacked from there
    into a temp directory, and renamed into place; a `.complete` marker (the verified md5) is written before
    that rename, so a folder at root/<name> is either complete or absent; with keep_archive=True the zip is
    then moved to root/<name>.zip with os.replace (atomic);
  * on any failure (no network, HTTP error, dropped connection, truncated body, checksum mismatch, bad zip,
    zip-slip, KeyboardInterrupt) the temp files are removed and nothing half-written is left behind;
  * a folder that is already complete is returned without touching the network.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import socket
import sys
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import requests

from recsys.data.schema import DataUnavailableError, DataValidationError

DEFAULT_BASE_URL = "https://files.grouplens.org/datasets/movielens"
DATA_DIR_ENV = "RECSYS_DATA_DIR"
MARKER = ".complete"
_CHUNK = 1 << 20
_MD5_RE = re.compile(r"\b([0-9a-fA-F]{32})\b")
_TMP_PREFIX = ".tmp-"
# a mirror that trickles bytes never trips the per-read timeout: refuse less than this many bytes per window
_MIN_RATE = 1024           # bytes per second, averaged over
_RATE_WINDOW = 60.0        # seconds


@dataclass(frozen=True)
class Release:
    """One GroupLens release: its archive URL, pinned md5 (None: verify against the `.md5` sidecar), the
    folder name inside the zip, and its approximate download size in MB."""

    name: str
    url: str
    md5: str | None
    archive_dir: str
    approx_mb: float

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    def url_for(self, base_url: str | None = None) -> str:
        """The archive URL, with the GroupLens prefix replaced by base_url when one is given."""
        if base_url is None:
            return self.url
        return f"{base_url.rstrip('/')}/{self.filename}"


def _release(name: str, md5: str | None, archive_dir: str, approx_mb: float) -> Release:
    return Release(name, f"{DEFAULT_BASE_URL}/{name}.zip", md5, archive_dir, approx_mb)


RELEASES: dict[str, Release] = {
    r.name: r
    for r in (
        _release("ml-100k", "0e33842e24a9c977be4e0107933c0723", "ml-100k", 5),
        _release("ml-1m", "c4d9eecfca2ab87c1945afe126590906", "ml-1m", 6),
        _release("ml-10m", "ce571fd55effeba0271552578f2648bd", "ml-10M100K", 63),
        _release("ml-20m", "cd245b17a1ae2cc31bb14903e1204af3", "ml-20m", 198),
        _release("ml-25m", "6b51fb2759a8657d3bfcbfc42b592ada", "ml-25m", 250),
        # GroupLens rebuilds the "latest" releases: no pinned md5, verified against <url>.md5 instead.
        _release("ml-latest-small", None, "ml-latest-small", 1),
        _release("ml-latest", None, "ml-latest", 335),
    )
}


def default_data_root() -> Path:
    """$RECSYS_DATA_DIR if set, else ~/.cache/ss4rec-workbench/movielens."""
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "ss4rec-workbench" / "movielens"


def get_release(name: str) -> Release:
    """The registry entry for name (case-insensitive; the in-zip folder name, e.g. ml-10M100K, also works)."""
    key = name.strip().lower()
    if key in RELEASES:
        return RELEASES[key]
    for rel in RELEASES.values():
        if rel.archive_dir.lower() == key:
            return rel
    raise DataUnavailableError(
        f"Unknown MovieLens release {name!r}. Known releases: {', '.join(RELEASES)}."
    )


# ----------------------------------------------------------------------------------------------- messages


def _no_network(url: str, exc: BaseException) -> DataUnavailableError:
    return DataUnavailableError(
        f"No network: could not download {url} ({type(exc).__name__}: {exc}). "
        f"Download {url} on a machine with internet access, unzip it, and pass --data-dir PATH "
        f"(PATH = the unzipped folder)."
    )


def _http_error(url: str, resp: requests.Response) -> DataUnavailableError:
    return DataUnavailableError(
        f"{url} answered HTTP {resp.status_code} {resp.reason or ''}".rstrip()
        + ". Check the release name and --base-url, or download the zip elsewhere, unzip it, "
        "and pass --data-dir PATH."
    )


def _interrupted(url: str, got: int, total: int | None, exc: BaseException | None) -> DataUnavailableError:
    of = f" of {total:,}" if total is not None else ""
    why = f" ({type(exc).__name__}: {exc})" if exc is not None else " (the server closed the connection early)"
    return DataUnavailableError(
        f"The download of {url} was cut off after {got:,}{of} bytes{why}; nothing was kept. Run it again, or "
        f"download the zip elsewhere, unzip it, and pass --data-dir PATH."
    )


# ------------------------------------------------------------------------------------------------ network


def _get(url: str, timeout: float) -> requests.Response:
    """GET url as a stream; network failures -> DataUnavailableError (no network), HTTP errors -> with status."""
    try:
        resp = requests.get(url, stream=True, timeout=timeout)
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise _no_network(url, exc) from exc
    except requests.RequestException as exc:  # invalid URL, too many redirects, ...
        raise DataUnavailableError(f"Cannot download {url}: {type(exc).__name__}: {exc}") from exc
    if resp.status_code != 200:
        resp.close()
        raise _http_error(url, resp)
    return resp


def fetch_sidecar_md5(url: str, timeout: float = 30) -> str | None:
    """The md5 published at `<url>.md5`, or None when there is none (HTTP error, no 32-hex string in it).

    A network failure raises DataUnavailableError: the archive itself could not be had either.
    """
    md5_url = url + ".md5"
    try:
        resp = _get(md5_url, timeout)
    except DataUnavailableError as exc:
        if exc.__cause__ is not None:  # no network, invalid URL, ...: not just a missing sidecar
            raise
        return None  # an HTTP error status: GroupLens publishes no sidecar here
    raw = b""
    try:
        with resp:
            for chunk in resp.iter_content(chunk_size=4096):
                raw += chunk
                if len(raw) >= 65536:
                    break
    except requests.RequestException:
        return None
    m = _MD5_RE.search(raw.decode("ascii", errors="replace"))
    return m.group(1).lower() if m else None


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(total: int | None, desc: str, enabled: bool):
    """A tqdm byte counter (or a no-op stand-in when disabled or tqdm is missing)."""
    if not enabled:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        return _NoBar()
    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, leave=False,
                file=sys.stderr)


class _Watchdog:
    """Aborts a download that trickles: requests' timeout is per read, so a mirror sending a byte every few seconds
    would never time out. Every _RATE_WINDOW seconds the bytes received must reach _MIN_RATE per second, else the
    connection is shut down (which ends the blocked read) and `stalled` says what was seen."""

    def __init__(self, resp):
        self.resp, self.got, self.stalled = resp, 0, None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self):
        start, start_got = time.monotonic(), 0
        while not self._done.wait(min(1.0, _RATE_WINDOW / 4)):
            elapsed = time.monotonic() - start
            if elapsed < _RATE_WINDOW:
                continue
            if self.got - start_got < _MIN_RATE * elapsed:
                self.stalled = (self.got - start_got, elapsed, self.got)
                self._abort()
                return
            start, start_got = time.monotonic(), self.got

    def _abort(self):
        sock = getattr(getattr(self.resp.raw, "connection", None), "sock", None) or \
            getattr(getattr(getattr(getattr(self.resp.raw, "_fp", None), "fp", None), "raw", None), "_sock", None)
        try:
            if sock is not None:
                sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def stall_error(self, url: str) -> DataUnavailableError:
        window, elapsed, got = self.stalled
        return DataUnavailableError(
            f"Download of {url} stalled: {window:,} bytes in the last {elapsed:.0f} s (under {_MIN_RATE // 1024} "
            f"KiB/s) after {got:,} bytes. The partial file was deleted; try again later or another mirror "
            f"(--base-url), or download it elsewhere, unzip it and pass --data-dir PATH.")

    def stop(self):
        self._done.set()


def _stream_to(resp: requests.Response, fh, url: str, desc: str, progress: bool) -> str:
    """Write resp's body to fh, return its md5; a cut-off body raises DataUnavailableError."""
    total: int | None = None
    length = resp.headers.get("Content-Length")
    encoded = resp.headers.get("Content-Encoding", "identity").lower() not in ("", "identity")
    if length is not None and length.isdigit() and not encoded:
        total = int(length)
    digest = hashlib.md5()
    got = 0
    bar = _progress_bar(total, desc, progress)
    watchdog = _Watchdog(resp)
    try:
        try:
            for chunk in resp.iter_content(chunk_size=16 << 10):
                if not chunk:
                    continue
                fh.write(chunk)
                digest.update(chunk)
                got += len(chunk)
                watchdog.got = got
                bar.update(len(chunk))
        except (requests.RequestException, OSError, ValueError, AttributeError) as exc:
            if watchdog.stalled:
                raise watchdog.stall_error(url) from exc
            # requests' errors are OSErrors too; other OSErrors are local (disk full, ...): let those through
            if not isinstance(exc, (requests.RequestException, ConnectionError, TimeoutError)):
                raise
            raise _interrupted(url, got, total, exc) from exc
        if watchdog.stalled:
            raise watchdog.stall_error(url)
    finally:
        watchdog.stop()
        bar.close()
    if total is not None and got != total:
        raise _interrupted(url, got, total, None)
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------------ unpack


def _member_target(dest: Path, member: str) -> Path:
    """Where member would land under dest; refuse names that would land outside it (zip-slip)."""
    name = member.replace("\\", "/")
    pure = PurePosixPath(name)
    if (pure.is_absolute() or ".." in pure.parts or re.match(r"^[A-Za-z]:", name)
            or name.startswith("/")):
        raise DataValidationError(
            f"Refusing to unpack: archive member {member!r} would be written outside the target folder "
            f"(zip-slip). The archive is not a genuine MovieLens release."
        )
    target = (dest / name).resolve()
    root = dest.resolve()
    if target != root and root not in target.parents:
        raise DataValidationError(
            f"Refusing to unpack: archive member {member!r} resolves outside the target folder (zip-slip)."
        )
    return target


def _extract(zip_path: Path, dest: Path, archive_dir: str, url: str) -> Path:
    """Unpack zip_path into dest (checking every member first) and return dest/archive_dir."""
    label = url.rsplit("/", 1)[-1]
    try:
        with zipfile.ZipFile(zip_path) as zf:
            infos = zf.infolist()
            for info in infos:
                _member_target(dest, info.filename)
            zf.extractall(dest)
    except zipfile.BadZipFile as exc:
        raise DataValidationError(f"{label} from {url} is not a valid zip archive: {exc}") from exc
    except OSError as exc:  # disk full, permissions: a message, and the caller removes what was unpacked
        need = sum(i.file_size for i in infos) if "infos" in locals() else 0
        raise DataUnavailableError(
            f"Cannot unpack {label} into {dest.parent}: {exc.strerror or exc}"
            f"{f' (it needs {need / 1e6:,.0f} MB)' if need else ''}. Nothing was kept; free space or pass "
            f"another root, then run again.") from exc
    folder = dest / archive_dir
    if not folder.is_dir():
        top = sorted({PurePosixPath(i.filename.replace('\\', '/')).parts[0] for i in infos if i.filename})
        raise DataValidationError(
            f"{label} from {url} has no folder {archive_dir!r} (top level: {', '.join(top) or 'empty'})."
        )
    return folder


def _read_marker(folder: Path) -> str | None:
    """The md5 recorded in folder/.complete, or None when the folder has no valid marker."""
    try:
        text = (folder / MARKER).read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    m = _MD5_RE.match(text.strip())
    return m.group(1).lower() if m else None


def is_complete(folder: Path, release: Release | None = None) -> bool:
    """True when folder holds a finished extraction (its marker matches the release's pinned md5, if any)."""
    md5 = _read_marker(Path(folder))
    if md5 is None:
        return False
    return release is None or release.md5 is None or md5 == release.md5.lower()


def _remove(path: Path | None) -> None:
    if path is None:
        return
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    except OSError:
        pass


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_orphans(root: Path) -> None:
    """Remove the `.part` files and half-unpacked folders a killed download left (kill -9 runs no cleanup): those
    whose process (its pid is in the name) no longer runs. Another live download's files are left alone."""
    for p in root.glob(f"{_TMP_PREFIX}*"):
        m = re.match(rf"{re.escape(_TMP_PREFIX)}(\d+)-", p.name)
        if m is None or (int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1)))):
            _remove(p)


# -------------------------------------------------------------------------------------------------- main


def download_release(
    name: str,
    root: str | os.PathLike | None = None,
    base_url: str | None = None,
    allow_unverified: bool = False,
    progress: bool = True,
    timeout: float = 30,
    keep_archive: bool = False,
) -> Path:
    """Download, verify and unpack a MovieLens release; return the folder root/<name> (e.g. root/ml-10m).

    root: where releases live (default: default_data_root()). base_url: replaces the GroupLens prefix
    https://files.grouplens.org/datasets/movielens. allow_unverified: accept an unpinned release whose `.md5`
    sidecar cannot be had. keep_archive: keep the verified zip as root/<name>.zip after unpacking.
    A complete folder (with a `.complete` marker) is returned at once, without network access.
    Raises DataUnavailableError (unknown name, no network, HTTP error, cut-off download, unverifiable) and
    DataValidationError (checksum mismatch, bad zip, zip-slip, an incomplete folder already in the way).
    """
    release = get_release(name)
    root_path = Path(root).expanduser() if root is not None else default_data_root()
    target = root_path / release.name
    url = release.url_for(base_url)

    if target.exists():
        if is_complete(target, release):
            return target
        recorded = _read_marker(target)
        why = (f"its {MARKER} marker records md5 {recorded}, not the pinned {release.md5}" if recorded
               else f"it has no {MARKER} marker (an interrupted or hand-made copy)")
        raise DataValidationError(
            f"{target} already exists but {why}. Remove it to download {release.name} again, "
            f"or pass it with --data-dir PATH if it is a copy you trust."
        )

    expected = release.md5.lower() if release.md5 else fetch_sidecar_md5(url, timeout)
    if expected is None and not allow_unverified:
        raise DataUnavailableError(
            f"Cannot verify {url}: {release.name} has no pinned md5 and its checksum file {url}.md5 could not "
            f"be had. Pass allow_unverified=True (--allow-unverified) to accept it unchecked, or download it "
            f"elsewhere, unzip it, and pass --data-dir PATH."
        )

    root_path.mkdir(parents=True, exist_ok=True)
    _remove_orphans(root_path)
    tmp_zip: Path | None = None
    tmp_dir: Path | None = None
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f"{_TMP_PREFIX}{os.getpid()}-{release.filename}.", suffix=".part",
                                        dir=root_path)
        tmp_zip = Path(tmp_name)
        with os.fdopen(fd, "wb") as fh:
            with _get(url, timeout) as resp:
                actual = _stream_to(resp, fh, url, release.name, progress)
            fh.flush()
            os.fsync(fh.fileno())
        if expected is not None and actual != expected:
            raise DataValidationError(
                f"Checksum mismatch for {url}: expected md5 {expected}, got {actual}. The file was deleted; "
                f"run again, or download it elsewhere, check it, unzip it, and pass --data-dir PATH."
            )

        tmp_dir = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{os.getpid()}-{release.name}.", dir=root_path))
        folder = _extract(tmp_zip, tmp_dir, release.archive_dir, url)
        note = "" if expected is not None else "unverified (no checksum available)\n"
        (folder / MARKER).write_text(f"{actual}\n{note}source {url}\n", encoding="ascii")
        try:
            os.rename(folder, target)  # atomic: root/<name> appears complete, marker included
        except OSError:
            if is_complete(target, release):  # another process finished first
                return target
            raise
        if keep_archive:
            os.replace(tmp_zip, root_path / release.filename)  # atomic too
            tmp_zip = None
        return target
    finally:
        _remove(tmp_zip)
        _remove(tmp_dir)


# --------------------------------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m recsys.data.download",
        description="Download, verify (md5) and unpack a GroupLens MovieLens release; print its folder.",
    )
    parser.add_argument("name", help=f"release: {', '.join(RELEASES)}")
    parser.add_argument("--root", default=None,
                        help=f"where releases live (default: ${DATA_DIR_ENV} or ~/.cache/ss4rec-workbench/movielens)")
    parser.add_argument("--base-url", default=None, help=f"mirror prefix replacing {DEFAULT_BASE_URL}")
    parser.add_argument("--allow-unverified", action="store_true",
                        help="accept an unpinned release whose .md5 checksum file cannot be had")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--timeout", type=float, default=30, help="network timeout in seconds (default 30)")
    parser.add_argument("--keep-archive", action="store_true", help="keep the verified zip next to the folder")
    args = parser.parse_args(argv)
    try:
        folder = download_release(args.name, root=args.root, base_url=args.base_url,
                                  allow_unverified=args.allow_unverified, progress=not args.no_progress,
                                  timeout=args.timeout, keep_archive=args.keep_archive)
    except (DataUnavailableError, DataValidationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; nothing was kept", file=sys.stderr)
        return 130
    print(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
