"""Explore MovieLens: headline numbers and the rating distribution of the chosen dataset."""
import altair as alt
import pandas as pd
import streamlit as st

from recsys.app.common import dataset_or_error

st.title("Explore MovieLens")
st.caption("The embedded default is ML-100K (GroupLens, as shipped in the recbole==1.2.1 wheel). Point to any "
           "MovieLens folder (ML-1M, ML-10M, ML-20M, ML-25M, ml-latest, ml-latest-small) to explore it instead.")
source = st.radio("Dataset", ["Embedded ML-100K", "A folder on this machine"], horizontal=True)
data_dir = None
if source != "Embedded ML-100K":
    data_dir = st.text_input("MovieLens folder", placeholder="/path/to/ml-1m")
    if not data_dir:
        st.info("Type the path of a folder that holds u.data, ratings.dat, ratings.csv or ratings.parquet.")
        st.stop()
data = dataset_or_error(None, data_dir)
if data is None:
    st.stop()

stats = data.stats()
c = st.columns(5)
c[0].metric("Ratings", f"{stats['ratings']:,}")
c[1].metric("Users", f"{stats['users']:,}")
c[2].metric("Movies rated", f"{stats['rated_items']:,}", help=f"{stats['items']:,} movies in the item file")
c[3].metric("Rating range", f"{stats['rating_min']:g} – {stats['rating_max']:g}")
c[4].metric("Density", f"{stats['density']:.2%}")
if stats.get("time_min"):
    st.write(f"**{stats['dataset']}** · ratings from {stats['time_min'][:10]} to {stats['time_max'][:10]} · "
             f"source `{stats['source']}`")
for note in data.notes:
    st.warning(note)

dist = data.interactions["rating"].value_counts().sort_index().rename_axis("rating").reset_index(name="ratings")
st.subheader("Rating distribution")
st.altair_chart(alt.Chart(dist).mark_bar().encode(x=alt.X("rating:O", title="rating"),
                                                  y=alt.Y("ratings:Q", title="number of ratings"),
                                                  tooltip=["rating", "ratings"]), width="stretch")
