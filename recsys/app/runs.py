"""Run discovery and cached model loading for the pages (errors as messages, never tracebacks)."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from recsys.inference import LoadedRun, load_run
from recsys.compare import scan_runs
from recsys.runs import RUN_FILE, RunError

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_RUNS = ROOT / "checkpoints"


@st.cache_resource(show_spinner=False, max_entries=8)
def _cached_run(path: str, stamp: float) -> LoadedRun:  # stamp: run.json's mtime, so a re-trained run reloads
    return load_run(path)


def loaded_run_or_error(path: Path) -> LoadedRun | None:
    try:
        with st.spinner(f"Loading {path.name} (weights, id maps and its dataset; cached after the first time)..."):
            return _cached_run(str(path), (path / RUN_FILE).stat().st_mtime)
    except (RunError, OSError) as exc:
        st.error(f"Cannot use this run: {exc}")
    except Exception as exc:  # never a raw traceback
        st.error(f"Unexpected error while loading {path.name} ({type(exc).__name__}): {exc}")
    return None


def runs_folder_input(key: str) -> Path:
    folder = st.text_input("Runs folder", value=str(DEFAULT_RUNS), key=key,
                           help="A folder of run directories written by scripts/train.py")
    return Path(folder).expanduser()


def pick_run(folder: Path, models: tuple[str, ...], label: str, key: str, dataset: str | None = None,
             optional: bool = False) -> Path | None:
    """A selectbox of complete runs of the given models; explains what to do when there are none."""
    found = scan_runs(folder)  # the Compare page's scan: the same runs, and the same errors, on every page
    if found.root_error:
        st.warning(found.root_error)
    broken = found.errors
    good = [(r.path, r.info) for r in found.runs if r.info["model"] in models and r.info.get("status") == "complete"
            and (dataset is None or r.info["dataset"]["name"] == dataset)]
    if broken:
        with st.expander(f"{len(broken)} run folder(s) could not be read"):
            for p, e in broken:
                st.write(f"`{p.name}`: {e}")
    if not good:
        if not optional:
            st.info(f"No complete {' / '.join(models)} run in `{folder}`"
                    f"{f' on {dataset}' if dataset else ''}. Train one, e.g. "
                    f"`python scripts/train.py --model {models[0]} --config configs/{models[0]}"
                    f"{'-ranking' if models[0] == 'ncf' else ''}.yaml`.")
        return None
    names = [p.name for p, _ in good]
    options = (["(none)"] if optional else []) + names
    choice = st.selectbox(label, options, key=key, index=1 if optional else 0)  # side by side from the start
    return None if choice == "(none)" else folder / choice
