"""Live recommendations: SS4Rec and a baseline (NCF, a floor, SASRec, GRU4Rec) side by side for a user or a
history you build, with a what-if on time.
The runs and the user are chosen in the shared sidebar."""

import numpy as np
import pandas as pd
import streamlit as st

from recsys import charts
from recsys.app import state
from recsys.app.common import show_chart
from recsys.app.runs import loaded_run_or_error
from recsys.catalogue import beside_ss4rec, card, display_name
from recsys.compare.variants import changes, reads_target_time
from recsys.inference import (
    contributions,
    gap_sweep,
    human_gap,
    most_rated,
    prefill,
    retention_curve,
    score_history,
    user_history,
)

# log-spaced, second-scale steps: where a model told the gap still cares is a matter of seconds to minutes
GAPS = {"0 s": 0, "5 s": 5, "30 s": 30, "1 min": 60, "5 min": 300, "30 min": 1800, "1 hour": 3600,
        "6 hours": 6 * 3600, "1 day": 86400, "1 week": 7 * 86400, "1 month": 30 * 86400, "6 months": 182 * 86400,
        "1 year": 365 * 86400, "2 years": 730 * 86400}

st.title("Live recommendations")
st.caption("SS4Rec reads a history of (movie, time) and is told when the next rating happens; SASRec, GRU4Rec and "
           "the Markov floor read the movies but not the times; NCF only knows who the user is. Change the gap before "
           "the next interaction to see how SS4Rec's list moves.")
ss_path = state.require_ss4rec_run().path
ss = loaded_run_or_error(ss_path)
if ss is None:
    st.stop()
other_run = state.chosen_run("other")
ncf_path = other_run.path if other_run is not None else None
other = loaded_run_or_error(ncf_path) if ncf_path else None
st.caption(f"SS4Rec run **{ss_path.name}**" + (f" beside **{ncf_path.name}**" if ncf_path else "")
           + " (choose the runs in the sidebar; the SS4Rec variants on What matters, e.g. log1p-gaps, are offered "
           "there too).")
timed = reads_target_time(ss.info)
if not timed:
    st.warning(f"This SS4Rec run does not read the time of the next rating ({'; '.join(changes(ss.info))}): the "
               "what-if gap below changes nothing in its list.")
if other is not None and not np.array_equal(other.prepared.item_map.raw, ss.prepared.item_map.raw):
    st.warning("The two runs index different movie sets (different filters); side-by-side lists may differ for that "
               "reason alone.")

mode = st.radio("History", ["An existing user", "Build my own"], horizontal=True, key="live_mode")
user_id = None
if mode == "An existing user":
    user_id = state.require_user()
    try:
        hist = user_history(ss, user_id)
    except KeyError as exc:
        st.warning(f"{exc}. Pick another user.")
        st.stop()
    items, times = hist["item_idx"].to_numpy(), hist["timestamp"].to_numpy()
    shown = hist.tail(8).assign(date=lambda d: pd.to_datetime(d["timestamp"], unit="s").dt.strftime("%Y-%m-%d"))
    st.write(f"User {user_id}: {len(hist)} ratings, the last on "
             f"{pd.to_datetime(times[-1], unit='s'):%Y-%m-%d}. Most recent:")
    st.dataframe(shown[["date", "title", "rating"]], hide_index=True, width="stretch")
else:
    titles = ss.item_columns["title"][1:]
    picked = st.multiselect("Movies you watched, oldest first (type to search)",
                            options=list(range(1, len(titles) + 1)), format_func=lambda i: titles[i - 1],
                            key="live_pick", max_selections=ss.max_len,
                            # "star wars" + Enter must add Star Wars, not also Dr. Strangelove (a fuzzy match of the
                            # same letters in order)
                            filter_mode="contains")
    if not picked:
        st.info("Add at least one movie to build a history (an empty history cannot be scored).")
        st.stop()
    start = pd.Timestamp(int(ss.prepared.interactions["timestamp"].max()), unit="s").normalize()
    base = pd.DataFrame({"movie": [titles[i - 1] for i in picked],
                         "date": [start - pd.Timedelta(days=len(picked) - 1 - j) for j in range(len(picked))]})
    edited = st.data_editor(base, disabled=["movie"], hide_index=True, key="live_dates",
                            column_config={"date": st.column_config.DatetimeColumn("when", format="YYYY-MM-DD HH:mm")})
    when = pd.to_datetime(edited["date"], errors="coerce")
    if when.isna().any():
        st.warning("Every movie needs a date.")
        st.stop()
    items = np.array(picked, dtype=np.int64)
    if when.dt.tz is not None:
        when = when.dt.tz_convert(None)
    # seconds whatever the column's resolution (an edited cell can turn it from ns into ms or s)
    times = ((when - pd.Timestamp("1970-01-01")) // pd.Timedelta(seconds=1)).to_numpy(dtype=np.int64)
    order = np.argsort(times, kind="stable")
    items, times = items[order], times[order]
    ts = ss.prepared.interactions["timestamp"]
    lo, hi = int(ts.min()), int(ts.max())
    outside = [titles[i - 1] for i, t in zip(items, times) if t < lo or t > hi + 365 * 86400]
    if outside:
        st.warning(f"{len(outside)} date(s) lie outside the data's span ({pd.to_datetime(lo, unit='s'):%Y-%m-%d} to "
                   f"{pd.to_datetime(hi, unit='s'):%Y-%m-%d}, plus a year): {', '.join(outside[:3])}"
                   f"{' …' if len(outside) > 3 else ''}. SS4Rec reads only the gaps between dates, but it never saw "
                   "users at those times, so treat its list with care.")
    fed = pd.DataFrame({"step": range(1, len(items) + 1), "movie": [titles[i - 1] for i in items],
                        "when": pd.to_datetime(times, unit="s").strftime("%Y-%m-%d %H:%M"),
                        "gap before": ["—"] + [human_gap(int(g)) for g in np.diff(times)]})
    reordered = not np.array_equal(order, np.arange(len(order)))
    with st.expander("The history as it is fed (sorted by date)" + (": reordered by your dates" if reordered else ""),
                     expanded=reordered):
        st.dataframe(fed, hide_index=True, width="stretch")

@st.cache_resource(show_spinner=False, max_entries=64)
def _prefill(run_path: str, items_key: bytes, times_key: bytes, _run=ss):
    return prefill(_run, np.frombuffer(items_key, dtype=np.int64).copy(),
                   np.frombuffer(times_key, dtype=np.int64).copy())


@st.cache_data(show_spinner=False, max_entries=64)
def _sweep(run_path: str, items_key: bytes, times_key: bytes, hide: bool, _run=ss, _cache=None):
    """Every what-if gap's list for this history: computed once per history, not on each move of the slider."""
    return gap_sweep(_run, np.frombuffer(items_key, dtype=np.int64), np.frombuffer(times_key, dtype=np.int64), GAPS,
                     k=10, hide_seen=hide, cache=_cache)


@st.cache_data(show_spinner=False, max_entries=16)
def _retention(run_path: str, _run=ss):
    return retention_curve(_run, np.geomspace(1, 730 * 86400, 60))


@st.cache_data(show_spinner=False, max_entries=64)
def _other_history_scores(run_path: str, items_key: bytes, times_key: bytes, when: int | None, hide: bool,
                          _run=other):
    """The baseline's list for a history: it does not move with the what-if gap unless the run reads time (then
    `when` is part of the key), so moving the slider does not re-score it."""
    return score_history(_run, np.frombuffer(items_key, dtype=np.int64), np.frombuffer(times_key, dtype=np.int64),
                         now=when, k=10, hide_seen=hide)


@st.cache_data(show_spinner=False, max_entries=64)
def _other_user_scores(run_path: str, uid: int, hide: bool, _run=other):
    return score_history(_run, user_id=uid, k=10, hide_seen=hide)


@st.fragment
def _what_if() -> None:
    """The what-if part of the page: moving the gap slider (or any control below it) re-runs only this, not the
    sidebar, the history and the rest of the page."""
    gap_label = st.select_slider("What if the next rating happens after…", options=list(GAPS), value="1 day",
                                 key="live_gap")
    hide_seen = st.toggle("Hide movies already in the history", value=True, key="live_hide")
    now = int(times[-1]) + GAPS[gap_label]

    try:
        cache = _prefill(str(ss_path), items.astype(np.int64).tobytes(), times.astype(np.int64).tobytes())
        res = score_history(ss, items, times, now=now, k=10, hide_seen=hide_seen, cache=cache)
        base_res = score_history(ss, items, times, now=int(times[-1]), k=10, hide_seen=hide_seen, cache=cache)
        sweep = _sweep(str(ss_path), items.astype(np.int64).tobytes(), times.astype(np.int64).tobytes(), hide_seen,
                       _cache=cache)
    except ValueError as exc:
        st.error(str(exc))
        return

    left, right = st.columns(2)
    with left:
        _ss4rec_list(res, base_res, gap_label)
    with right:
        _other_list(now, hide_seen)
    if st.toggle("Why SS4Rec's top pick? (leave-one-out contributions of each movie in the history)", value=False,
                 key="live_why"):
        _why_top_pick(res, now, gap_label)
    _time_sensitivity(sweep)


def _ss4rec_list(res, base_res, gap_label: str) -> None:
    st.subheader("SS4Rec")
    moved = set(res.table["title"]) - set(base_res.table["title"])
    t = res.table.assign(**{"score (logit)": res.table["score"].round(3)},
                         change=["new vs 0 s" if x in moved else "" for x in res.table["title"]])
    st.dataframe(t[["rank", "title", "score (logit)", "change"]], hide_index=True, width="stretch")
    st.caption(f"Next rating {gap_label} after the last one; scored in {res.millis:.1f} ms (what-if re-score from "
               f"cached states). {len(moved)} of 10 differ from the list for a rating right away (0 s). "
               f"Run: {ss_path.name}.")


def _other_list(now: int, hide_seen: bool) -> None:
    """The run beside SS4Rec: its list for the built history (a model that reads one), the most-rated movies (one
    that cannot), or its list for the chosen user."""
    other_reads = other is not None and card(other.kind) is not None and card(other.kind).live
    st.subheader("Beside it: none" if other is None else display_name(other.kind))
    if other is None:
        st.info("Pick a baseline run on the same data in the sidebar ("
                + ", ".join(display_name(k) for k in beside_ss4rec()) + ").")
    elif other_reads:
        try:
            o = _other_history_scores(str(ncf_path), items.astype(np.int64).tobytes(),
                                      times.astype(np.int64).tobytes(),
                                      now if reads_target_time(other.info) else None, hide_seen)
            st.dataframe(o.table[["rank", "title", "score"]].round(3).rename(columns={"score": "score (logit)"}),
                         hide_index=True, width="stretch")
            st.caption(f"{o.note}" + ("" if reads_target_time(other.info) else
                                      ": the time of the next rating does not change its list")
                       + f". Scored in {o.millis:.1f} ms. Run: {ncf_path.name}.")
        except ValueError as exc:
            st.warning(str(exc))
    elif user_id is None:
        top = most_rated(other, exclude=items if hide_seen else (), k=10)
        st.info(f"{display_name(other.kind)} cannot score a history you built: it only has "
                "embeddings for users it was trained on. What a recommender without your history falls back to, "
                "the most-rated movies, is shown instead.")
        st.dataframe(top, hide_index=True, width="stretch")
        st.caption(f"Most-rated movies among the {len(other.prepared.interactions):,} ratings of the run's data "
                   "(all of them, the held-out ones included)"
                   f"{'; movies in your history hidden' if hide_seen else ''}"
                   f". Pick an existing user to see {display_name(other.kind)}'s own list.")
    else:
        try:
            o = _other_user_scores(str(ncf_path), int(user_id), hide_seen)
            col = [c for c in o.table.columns if c in ("score", "predicted rating")][0]
            shown = o.table[["rank", "title", col]].round(3).rename(columns={"score": "score (logit)"})
            st.dataframe(shown, hide_index=True, width="stretch")
            scale = ("predicted ratings (1-5 stars), not logits: ranked by the rating this run predicts, so its "
                     "scores are not on SS4Rec's scale" if col == "predicted rating" else "logits, like SS4Rec's")
            st.caption(f"{o.note or 'Scores for this user'}: {scale}; the time of the next rating does not change "
                       f"{display_name(other.kind)}. Scored in {o.millis:.1f} ms. Run: {ncf_path.name}.")
        except (KeyError, ValueError) as exc:
            st.warning(str(exc))


def _why_top_pick(res, now: int, gap_label: str) -> None:
    top_item = int(res.table["item"].iloc[0])
    top_idx = int(ss.prepared.item_map.to_index([top_item])[0])
    n_fed = min(len(items), ss.max_len)
    with st.spinner("Scoring the history with each movie left out..."):
        try:
            why = contributions(ss, items, times, n_fed, [top_idx], now=now)
        except ValueError as exc:
            st.warning(str(exc))
            return
    if n_fed <= 1:
        st.caption("With one movie in the history there is nothing to take away.")
        return
    rows = pd.DataFrame({"step": why["positions"], "title": why["titles"], "target": "top pick",
                         "contribution": why["values"][top_idx]})
    st.markdown(f"**Score of the top pick ({res.table['title'].iloc[0]}) {gap_label} after the last movie**")
    show_chart(charts.contribution_chart(rows, None))
    lead = rows.sort_values("contribution", ascending=False).iloc[0]
    st.caption(f"Contribution = the score (logit) with the whole fed history minus the score with that one movie "
               f"(and its time) left out. {lead['title']} did most ({lead['contribution']:+.2f}); the score is "
               f"{why['logit'][top_idx]:.2f}. The same computation as on State trajectories, at the what-if gap.")


def _time_sensitivity(sweep) -> None:
    st.subheader("Where SS4Rec stops caring about time")
    a, b = st.columns(2)
    with a:
        st.markdown("**Does the gap change the list?**")
        show_chart(charts.overlap_chart(sweep, title=None))
        st.caption("How many of SS4Rec's top 10 at each gap it shares with its top 10 for a rating right away (0 s); "
                   "10 everywhere means the gap changes nothing for this history.")
    with b:
        curve = _retention(str(ss_path))
        if curve.empty:
            st.info("This run has no S5 layer (Mamba only): nothing in it decays with time.")
            return
        st.markdown("**S5 retention against the gap**")
        show_chart(charts.retention_curve_chart(curve, title=None))
        st.caption("S5 retention per layer: the share of the state (mean |Ā| over its dimensions) kept across a gap, "
                   "as this run feeds gaps (raw seconds for the released model; log1p or span-scaled for those "
                   "variants). Where it reaches 0, longer gaps all look the same to the model.")
        hour = curve[curve["seconds"] >= 3600].groupby("layer")["retention"].first()
        if timed and (hour < 0.05).all():
            st.info(f"This run keeps under 5% of its state over an hour (layers: "
                    f"{', '.join(f'{r:.3f}' for r in hour)}): gaps of hours, days and years all look alike to it. "
                    "For a model in which longer gaps still count, pick a **log1p-gaps** run in the sidebar: its S5 "
                    "keeps most of its state across days and years (What matters compares it with the released one).")

_what_if()
