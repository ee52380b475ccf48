"""Entry point of the dashboard: only declares the pages (each page lives in pages/)."""
import streamlit as st

st.set_page_config(page_title="SS4Rec vs NCF workbench", layout="wide")

pages = [
    st.Page("pages/explore.py", title="Explore MovieLens", url_path="explore-movielens", default=True),
    st.Page("pages/compare.py", title="Compare runs", url_path="compare-runs"),
    st.Page("pages/trajectories.py", title="State trajectories", url_path="state-trajectories"),
    st.Page("pages/live.py", title="Live recommendations", url_path="live-recommendations"),
]
st.navigation(pages).run()
