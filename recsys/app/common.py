"""Cached dataset loading for the pages; errors come back as messages, never as tracebacks."""
from __future__ import annotations

import re

import altair as alt
import streamlit as st

from recsys.data import DataError, MovieLensData, load_dataset
from recsys.data.loader import source_stamp
from recsys.roots import OutsideRoots, confine_data


@st.cache_resource(show_spinner=False, max_entries=4)
def _load(name: str | None, data_dir: str | None, stamp: tuple) -> MovieLensData:
    """Keyed by the source files' stamp too (size, mtime, ctime per file): an edited file is re-read."""
    return load_dataset(name, data_dir or None, download=False)


def cached_dataset(name: str | None, data_dir: str | None) -> MovieLensData:
    """The dataset, loaded once per version of its source files (a few stat calls per page run to check)."""
    return _load(name, data_dir or None, source_stamp(name, data_dir or None))


def dataset_or_error(name: str | None, data_dir: str | None) -> MovieLensData | None:
    """Load a dataset for a page; on failure show what went wrong and what to do, and return None."""
    try:
        if data_dir:  # a typed folder: only inside the configured data roots (recsys.roots), checked first
            confine_data(data_dir)
        with st.spinner("Loading and validating the dataset (cached after the first time)..."):
            return cached_dataset(name, data_dir)
    except OutsideRoots as exc:
        st.error(f"Could not load the dataset: {exc}")
    except DataError as exc:
        st.error(f"Could not load the dataset: {exc}")
    except Exception as exc:  # the app never shows a raw traceback
        st.error(f"Unexpected error while loading the dataset ({type(exc).__name__}): {exc}")
    return None


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]<>()#+!|~$-])")


def show_chart(chart, container=None) -> None:
    """Draw an Altair chart full width with its title as a line of text above it, which wraps at any width: Vega cuts
    a title longer than its chart with "…" (a half-width column at 800 px kept about 25 characters of "Training loss
    (training data)"). The spec keeps the title in `usermeta.title`, where tests and exports still find it."""
    box = container if container is not None else st
    title = chart.title
    if isinstance(title, str) and title:
        chart = chart.copy()
        chart.title = alt.Undefined
        meta = chart.usermeta if isinstance(chart.usermeta, dict) else {}
        chart.usermeta = {**meta, "title": title}
        box.markdown("**" + _MARKDOWN_SPECIAL.sub(r"\\\1", title) + "**")
    box.altair_chart(chart, width="stretch")
