"""Entry point of the dashboard: only declares the pages (each page lives in pages/)."""
import streamlit as st

st.set_page_config(page_title="SS4Rec vs NCF workbench", layout="wide")

pages = [
    st.Page("pages/explore.py", title="Explore MovieLens", default=True),
    st.Page("pages/compare.py", title="Compare runs"),
    st.Page("pages/trajectories.py", title="State trajectories"),
    st.Page("pages/live.py", title="Live recommendations"),
]
st.navigation(pages).run()
