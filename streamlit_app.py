"""Entry point of the dashboard: declares the pages (each lives in pages/) and draws the sidebar they share (runs
folder, SS4Rec run, user: recsys.app.state), once, before the chosen page runs."""
import streamlit as st

from recsys.app import state

st.set_page_config(page_title="SS4Rec workbench", layout="wide")

pages = [
    st.Page("pages/answer.py", title="The answer", url_path="answer", default=True),
    st.Page("pages/explore.py", title="Explore MovieLens", url_path="explore-movielens"),
    st.Page("pages/compare.py", title="Compare runs", url_path="compare-runs"),
    st.Page("pages/trajectories.py", title="State trajectories", url_path="state-trajectories"),
    st.Page("pages/live.py", title="Live recommendations", url_path="live-recommendations"),
]
page = st.navigation(pages)
state.sidebar()
page.run()
