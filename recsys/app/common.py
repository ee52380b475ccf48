"""Cached dataset loading for the pages; errors come back as messages, never as tracebacks."""
from __future__ import annotations

import streamlit as st

from recsys.data import DataError, MovieLensData, load_dataset


@st.cache_resource(show_spinner=False)
def cached_dataset(name: str | None, data_dir: str | None) -> MovieLensData:
    return load_dataset(name, data_dir or None, download=False)


def dataset_or_error(name: str | None, data_dir: str | None) -> MovieLensData | None:
    """Load a dataset for a page; on failure show what went wrong and what to do, and return None."""
    try:
        with st.spinner("Loading and validating the dataset (cached after the first time)..."):
            return cached_dataset(name, data_dir)
    except DataError as exc:
        st.error(f"Could not load the dataset: {exc}")
    except Exception as exc:  # the app never shows a raw traceback
        st.error(f"Unexpected error while loading the dataset ({type(exc).__name__}): {exc}")
    return None
