"""The choices every page shares, made once: the runs folder, the SS4Rec run (State trajectories, Live), the run Live
puts beside it, and the user.

`sidebar()` draws them; streamlit_app.py calls it before running the page, so the sidebar appears once on every page.
Each choice is the value of a keyed sidebar widget, i.e. lives in st.session_state under one of the keys below, and
persists across page switches (the widgets are drawn on every page, so Streamlit never drops their keys). Pages
never read those keys themselves: they call the accessors (`runs_folder`, `chosen_run`, `chosen_user`, ...), which
apply exactly the defaults the sidebar shows, so a page run on its own (AppTest.from_file("app_pages/x.py"), without the
entry file) gets what a fresh app shows: checkpoints/, its first complete SS4Rec run, that run's first user.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import streamlit as st

from recsys import catalogue
from recsys import compare as C
from recsys.compare.variants import is_ablation
from recsys.roots import OutsideRoots, check_recorded_data_dir, confine_runs
from recsys.runs import RunDirectory

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_FOLDER = "checkpoints"  # relative to the project root

# st.session_state keys of the shared choices (the sidebar widgets' keys)
RUNS_FOLDER = "runs-folder"
SS4REC_RUN = "run-ss4rec"
OTHER_RUN = "run-other"
USER = "user-id"

NONE = "(none)"


def kinds(kind: str) -> tuple[str, ...]:
    """The models a run choice offers: SS4Rec, or the ranking models Live can put beside it (from the catalogue, so a
    new model is offered without an edit here)."""
    return ("ss4rec",) if kind == "ss4rec" else catalogue.beside_ss4rec()


def resolve_folder(text: str | None) -> Path:
    """A runs folder as typed: ~ expanded, a relative path taken from the project root, blank = checkpoints/."""
    path = Path((text or "").strip() or DEFAULT_FOLDER).expanduser()
    return path if path.is_absolute() else ROOT / path


def runs_folder() -> Path:
    return resolve_folder(st.session_state.get(RUNS_FOLDER, DEFAULT_FOLDER))


def scan() -> C.ScanResult:
    """The runs of the chosen folder, never stale after a training run: re-read whenever a run's files change
    (C.folder_stamp: their sizes and times), else the result of this session's last scan (a page run asks several
    times)."""
    folder = runs_folder()
    try:  # only the configured roots, checked before anything looks at the folder (recsys.roots)
        confine_runs(folder)
    except OutsideRoots as exc:
        return C.ScanResult(root_error=str(exc))
    stamp = C.folder_stamp(folder)
    memo = st.session_state.get("_scan_memo")
    if memo is not None and memo[0] == (str(folder), stamp) and \
            not any(r.info.get("status") == "running" for r in memo[1].runs):  # a training may die unseen
        return memo[1]
    found = C.scan_runs(folder)
    st.session_state["_scan_memo"] = ((str(folder), stamp), found)
    return found


def candidates(kind: str, found: C.ScanResult | None = None, dataset: str | None = None) -> list[C.Run]:
    """Complete runs offered for a choice (`kind`: "ss4rec" or "other"), optionally only those on `dataset`."""
    found = found or scan()
    offered = kinds(kind)
    runs = [r for r in found.runs if r.info["model"] in offered and r.info.get("status") == "complete"
            and (dataset is None or r.info["dataset"]["name"] == dataset)
            # a rating-aware run reads a history's ratings (the Compare page's rating group shows it); the state
            # and live pages step through or score ranking histories, and SS4Rec's there are ranking runs
            and not (r.info.get("config") or {}).get("rating_input")
            and (kind != "ss4rec" or r.info.get("objective", "ranking") == "ranking")]
    # the headline first: by model, then unmasked before masked re-evaluations, the released configuration before
    # other variants and ablations (What matters' evidence) last, then by seed (stable otherwise)
    return sorted(runs, key=lambda r: (offered.index(r.info["model"]),
                                       bool((r.info.get("protocol") or {}).get("mask_seen")),
                                       is_ablation(r.info), C.variant_of(r.info) not in ("released", "default"),
                                       C.seed_of(r.info) or 0))


def _pick(runs: list[C.Run], label) -> C.Run | None:
    """The run named `label`, else the first one (what a selectbox falls back to), else None."""
    return next((r for r in runs if r.label == label), runs[0] if runs else None)


def chosen_run(kind: str = "ss4rec", found: C.ScanResult | None = None) -> C.Run | None:
    """The chosen SS4Rec run (`kind="ss4rec"`), or the run shown beside it on Live (`"other"`: a baseline or floor
    run on the same dataset; None when "(none)" is chosen or there is none)."""
    found = found or scan()
    ss4rec = _pick(candidates("ss4rec", found), st.session_state.get(SS4REC_RUN))
    if kind == "ss4rec" or ss4rec is None:
        return ss4rec
    choice = st.session_state.get(OTHER_RUN)
    return None if choice == NONE else _pick(candidates("other", found, ss4rec.info["dataset"]["name"]), choice)


@st.cache_data(show_spinner=False, max_entries=16)
def _run_users(path: str, stamp: float) -> np.ndarray:  # stamp: run.json's mtime, so a re-trained run reloads
    check_recorded_data_dir(RunDirectory(path).info())  # a run.json cannot send the page outside the data roots
    return C.run_users(path)


def run_users(run: C.Run | None) -> tuple[np.ndarray, str | None]:
    """(raw user ids the run knows, None) or (empty, why they cannot be read)."""
    if run is None:
        return np.array([], dtype=np.int64), None
    try:
        return _run_users(str(run.path), C.info_stamp(run.path)), None
    except (C.RunError, OSError, OutsideRoots) as exc:
        return np.array([], dtype=np.int64), f"Cannot read the users of {run.label}: {exc}"


MAX_USER_DIGITS = 18  # beyond int64; no MovieLens id comes near


def parse_user_id(text) -> tuple[int | None, str | None]:
    """A typed user id: (id, None), or (None, why it is not one). Whole numbers only, surrounding spaces ignored:
    "12.7" is refused rather than rounded, "abc" or a blank box said, never silently replaced by another user."""
    typed = "" if text is None else str(text).strip()
    if not typed:
        return None, "No user id typed: type one, a whole number such as 42."
    digits = typed.lstrip("+-")
    if not digits.isascii() or not digits.isdigit() or len(typed) - len(digits) > 1:
        return None, f"“{typed}” is not a user id: ids are whole numbers such as 42 (no letters or decimal point)."
    if len(digits) > MAX_USER_DIGITS:
        return None, f"“{typed[:24]}…” is too long to be a user id."
    return int(typed), None


def entered_user() -> int | None:
    """The user id as typed in the sidebar (parsed, not checked against a run; None when it is not a whole number),
    or the default: the chosen run's first user (else 1)."""
    value = st.session_state.get(USER)
    if value is None:
        users, _ = run_users(chosen_run("ss4rec"))
        return int(users[0]) if len(users) else 1
    return parse_user_id(value)[0]


def user_problem() -> str | None:
    """Why the typed user id cannot be used (not a whole number; not a user of the chosen SS4Rec run; unreadable
    run); None if it can, or if it is a number and there is no run to check it against."""
    run = chosen_run("ss4rec")
    users, error = run_users(run)
    span = f" (ids {int(users.min())}..{int(users.max())})" if len(users) else ""
    if st.session_state.get(USER) is not None:
        _, why = parse_user_id(st.session_state[USER])
        if why:
            return why + (f" {run.label} has {len(users):,} users{span}." if run is not None and len(users) else "")
    if run is None or error:
        return error
    uid = entered_user()
    if uid is None or not len(users) or not np.isin(uid, users):
        return (f"User {uid} is not one of the {len(users):,} users of {run.label}{span or ' (no users)'}; pick "
                f"another id in the sidebar.")
    return None


def chosen_user() -> int | None:
    """The sidebar's user when it is a whole number the chosen SS4Rec run knows (or there is no run to check
    against), else None."""
    return None if user_problem() else entered_user()


def follows_sidebar_user(fingerprint: str | None) -> bool:
    """Whether a page exploring the data with this fingerprint follows the sidebar's user: the chosen SS4Rec run
    was trained on those data."""
    run = chosen_run("ss4rec")
    return bool(run is not None and fingerprint and run.info["dataset"].get("fingerprint") == fingerprint)


def user_id_input(label: str, key: str, default: int, container=None) -> int | None:
    """A user-id box of a page's own (a text box, so that what was typed is kept and judged): the id, or None after
    a warning saying why the text is not one."""
    box = container or st
    text = box.text_input(label, **_initial(key, str(default)), key=key,
                          help="A MovieLens user id: a whole number.")
    uid, why = parse_user_id(text)
    if why:
        box.warning(why)
    return uid


# the shared choices in the address bar (st.query_params), so a reload keeps the view and a link reproduces it:
# ?runs=<folder>&run=<SS4Rec run>&beside=<run>&user=<id>&interval=<seeds+users|users>; the page is the URL's path
URL_KEYS = {"runs": RUNS_FOLDER, "run": SS4REC_RUN, "beside": OTHER_RUN, "user": USER}
_URL_APPLIED = "_url_applied"


def _from_url(param: str, allowed: list[str] | None = None, notes: list[str] | None = None) -> None:
    """On a session's first script run, put the link's value of `param` into its widget's key (before the widget is
    drawn); a value the page cannot show is left out, with a note saying so."""
    if st.session_state.get(_URL_APPLIED) or param not in st.query_params:
        return
    value = st.query_params[param]
    key = URL_KEYS[param]
    if param == "user":
        uid, _ = parse_user_id(value)
        if uid is not None:
            st.session_state[key] = str(uid)
        elif notes is not None:
            notes.append(f"The link's user {value!r} is not a whole number: showing the run's first user.")
        return
    if allowed is not None and value not in allowed:
        if notes is not None:
            notes.append(f"The link's {param} {value!r} is not in this runs folder: showing the default.")
        return
    st.session_state[key] = value


def _to_url() -> None:
    """The current choices into the address bar (only those that are set)."""
    for param, key in URL_KEYS.items():
        value = st.session_state.get(key)
        if key == USER and value is not None:
            value = parse_user_id(value)[0]
            if value is None:  # what was typed is not an id: the address bar keeps the last one that was
                continue
        if value is None or value == NONE:
            st.query_params.pop(param, None)
        elif st.query_params.get(param) != str(value):
            st.query_params[param] = str(value)


def _initial(key: str, value) -> dict:
    """A widget's `value=` only on its first drawing: once its key holds a value (a link's, or the user's), passing
    one too would make Streamlit warn and ignore it."""
    return {} if key in st.session_state else {"value": value}


def short_run_name(run: C.Run) -> str:
    """What tells runs apart, first: model, variant, seed, then the data ("SS4Rec · released · seed 1 · ml-100k");
    a sidebar-wide box cut the folder name before its variant and seed."""
    info = run.info
    cfg = info.get("config") or {}
    parts = [catalogue.display_name(info.get("model"))]
    if cfg.get("variant") not in (None, "default"):
        parts.append(str(cfg["variant"]))
    if cfg.get("seed") is not None:
        parts.append(f"seed {cfg['seed']}")
    masked = bool((info.get("protocol") or {}).get("mask_seen"))
    parts.append(str((info.get("dataset") or {}).get("name", "?")) + (" masked" if masked else ""))
    return " · ".join(parts)


def sidebar() -> None:
    """Draw the shared choices in the sidebar; streamlit_app.py calls this once per script run, before the page.
    A link's query parameters (URL_KEYS) set them on a session's first run; every run writes them back."""
    notes: list[str] = []
    with st.sidebar:
        _from_url("runs")
        st.text_input("Runs folder", **_initial(RUNS_FOLDER, DEFAULT_FOLDER), key=RUNS_FOLDER,
                      help="A folder of run directories written by scripts/train.py; relative paths start at the "
                           "project root. Every page uses it.")
        found = scan()
        if found.root_error:
            st.caption(f"⚠️ {found.root_error}")
        ss4rec_runs = candidates("ss4rec", found)
        if ss4rec_runs:
            _from_url("run", [r.label for r in ss4rec_runs], notes)
            short = {r.label: short_run_name(r) for r in ss4rec_runs}
            st.selectbox("SS4Rec run", [r.label for r in ss4rec_runs], key=SS4REC_RUN, format_func=short.__getitem__,
                         help="The run State trajectories and Live recommendations use (its folder name is in the "
                              "address bar).")
        elif not found.root_error:
            st.caption("No complete SS4Rec run in this folder.")
        ss4rec = chosen_run("ss4rec", found)
        if ss4rec is not None:
            others = candidates("other", found, ss4rec.info["dataset"]["name"])
            _from_url("beside", [NONE] + [r.label for r in others], notes)
            beside = [NONE] + [r.label for r in others]
            # side by side from the start; a link's or the user's choice, once in the key, is not overridden
            index = beside.index(st.session_state[OTHER_RUN]) if st.session_state.get(OTHER_RUN) in beside \
                else (1 if others else 0)
            short = {NONE: NONE, **{r.label: short_run_name(r) for r in others}}
            st.selectbox("Beside it on Live", beside, index=index, key=OTHER_RUN, format_func=short.__getitem__,
                         help="A baseline (SASRec, GRU4Rec, NCF) or floor run on the same dataset, for Live "
                              "recommendations.")
        users, _ = run_users(ss4rec)
        _from_url("user", None, notes)
        # a text box, not a number box: a browser's number box rounds "12.7" and drops "abc" without a word; here
        # what was typed stays and user_problem() says what is wrong with it
        st.text_input("User id", **_initial(USER, str(int(users[0]) if len(users) else 1)), key=USER,
                      help="The MovieLens user id State trajectories and Live follow (and Explore, on the run's "
                           "dataset): a whole number.")
        problem = user_problem()
        if problem:
            st.warning(problem)
        for note in notes:
            st.warning(note)
    st.session_state[_URL_APPLIED] = True
    _to_url()


def require_ss4rec_run() -> C.Run:
    """The chosen SS4Rec run; without one, say why in the page (unreadable folders, none trained) and stop it."""
    found = scan()
    if found.root_error:
        st.warning(found.root_error)
    if found.errors:
        with st.expander(f"{len(found.errors)} run folder(s) could not be read"):
            for p, e in found.errors:
                st.write(f"`{p.name}`: {e}")
    run = chosen_run("ss4rec", found)
    if run is None:
        st.info(f"No complete SS4Rec run in `{runs_folder()}`. Train one, e.g. "
                f"`python scripts/train.py --model ss4rec --config configs/ss4rec.yaml`.")
        st.stop()
    return run


def require_user() -> int:
    """The sidebar's user, checked against the chosen SS4Rec run; otherwise say why in the page and stop it."""
    uid = chosen_user()
    if uid is None:
        st.warning(user_problem())
        st.stop()
    return uid


def interval_choice() -> str:
    """The interval the statistics pages draw (recsys.compare.seeds.INTERVALS), picked once and shared by the
    pages: seeds and users (default) or users only."""
    from recsys.compare.seeds import DEFAULT_INTERVAL, INTERVALS

    options = list(INTERVALS)
    if st.query_params.get("interval") in options and "interval_pick" not in st.session_state:
        st.session_state["interval_pick"] = st.query_params["interval"]  # a link's choice, on first sight
    current = st.session_state.get("interval_pick", DEFAULT_INTERVAL)  # a plain key: it outlives page switches
    labels = {"seeds+users": "seeds and users (two-level)", "users": "users only"}
    choice = st.radio("Intervals resample", options, index=options.index(current), horizontal=True,
                      format_func=labels.__getitem__,
                      help="; ".join(f"{labels[k]}: {v}" for k, v in INTERVALS.items()))
    st.session_state["interval_pick"] = choice
    st.query_params["interval"] = str(choice)
    return str(choice)
