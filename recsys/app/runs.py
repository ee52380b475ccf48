"""Cached model loading for the pages (errors as messages, never tracebacks). Which run to load is chosen once, in
the shared sidebar (recsys.app.state)."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from recsys import compare as C
from recsys.inference import LoadedRun, load_run
from recsys.roots import OutsideRoots, check_recorded_data_dir
from recsys.runs import RunDirectory


@st.cache_resource(show_spinner=False, max_entries=8)
def _cached_run(path: str, stamp: float) -> LoadedRun:  # stamp: run.json's mtime, so a re-trained run reloads
    check_recorded_data_dir(RunDirectory(path).info())  # a run.json cannot send the page outside the data roots
    return load_run(path)


def loaded_run_or_error(path: Path) -> LoadedRun | None:
    try:
        with st.spinner(f"Loading {path.name} (weights, id maps and its dataset; cached after the first time)..."):
            return _cached_run(str(path), C.info_stamp(path))
    except (C.RunError, OSError, OutsideRoots) as exc:
        st.error(f"Cannot use this run: {exc}")
    except Exception as exc:  # never a raw traceback
        st.error(f"Unexpected error while loading {path.name} ({type(exc).__name__}): {exc}")
    return None
