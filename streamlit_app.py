"""Entry point of the dashboard: declares the pages and draws the sidebar they share (runs folder, SS4Rec run,
user: recsys.app.state), once, before the chosen page runs.

The pages live in app_pages/, not pages/: Streamlit takes a pages/ folder beside the entry file for its legacy
file-name navigation until st.navigation first runs, so the first deep link after a server start showed
"Page not found"."""
import streamlit as st

from recsys.app import state

# the sidebar starts 264 px wide (Streamlit's default covered 300 of an 800 px screen) and, as "auto", hidden on phones
st.set_page_config(page_title="SS4Rec workbench", layout="wide", initial_sidebar_state=264)



def _answer_alias() -> None:
    """/answer: the default page is served at /, so its own path needs an alias (hidden from the menu) that opens
    it with the link's query parameters."""
    st.switch_page(pages[0], query_params=st.query_params.to_dict())


pages = [
    st.Page("app_pages/answer.py", title="The answer", url_path="answer-page", default=True),
    st.Page("app_pages/explore.py", title="Explore MovieLens", url_path="explore-movielens"),
    st.Page("app_pages/compare.py", title="Compare runs", url_path="compare-runs"),
    st.Page("app_pages/ablations.py", title="What matters", url_path="what-matters"),
    st.Page("app_pages/trajectories.py", title="State trajectories", url_path="state-trajectories"),
    st.Page("app_pages/live.py", title="Live recommendations", url_path="live-recommendations"),
    st.Page(_answer_alias, title="The answer", url_path="answer", visibility="hidden"),
]
page = st.navigation(pages)
state.sidebar()
page.run()
