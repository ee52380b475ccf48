"""What matters: SS4Rec's ablations against the released configuration (recsys.compare.ablations), built from the
runs in the sidebar's folder. What each variant changes, its difference from the released SS4Rec with a 95% interval,
and where (by the gap to the predicted interaction and by history length) the difference comes from."""
from __future__ import annotations

import streamlit as st

from recsys import charts
from recsys import compare as C
from recsys.app import state
from recsys.app.common import show_chart
from recsys.compare import ablations as AB
from recsys.compare import answer as A
from recsys.compare.answer import TARGET_TIME_CAVEAT


@st.cache_data(show_spinner=False, max_entries=8, persist="disk")  # a fresh server reuses them
def _studies(root: str, stamps: tuple, n_boot: int, interval: str) -> list[AB.AblationStudy]:
    """Keyed by every run's stamps, so a new run changes the page at once."""
    runs = C.scan_runs(root).runs
    return AB.ablation_studies(runs, lambda run: C.load_test_results(run.path, run.info), n_boot=n_boot,
                               interval=interval)


@st.cache_data(show_spinner=False, max_entries=8, persist="disk")
def _time_studies(root: str, stamps: tuple, n_boot: int, interval: str) -> list[AB.AblationStudy]:
    runs = C.scan_runs(root).runs
    return AB.time_entry_studies(runs, lambda run: C.load_test_results(run.path, run.info), n_boot=n_boot,
                                 interval=interval)


@st.cache_data(show_spinner=False, max_entries=16, persist="disk")
def _time_by_gap(root: str, stamps: tuple, study: int, interval: str):
    studies = _time_studies(root, stamps, 2000, interval)
    return AB.time_by_gap(studies[study], lambda run: C.load_test_results(run.path, run.info))


@st.cache_data(show_spinner=False, max_entries=64)
def _breakdown(root: str, stamps: tuple, study: int, row: int, by: str, interval: str):
    studies = _studies(root, stamps, 2000, interval)
    return AB.regime_breakdown(studies[study].rows[row], lambda run: C.load_test_results(run.path, run.info), by=by)


st.title("What matters")
st.caption("Why SS4Rec wins or loses: each ablation takes one thing away (the time of the predicted interaction, "
           "the gaps, their scale, one of the two layers) or gives a baseline SS4Rec's time input, is trained with "
           "the released recipe and its seeds, and is compared with the released SS4Rec on the same test users: "
           "paired bootstrap over the same users. What a variant changes is read from its configuration, not from "
           "its name.")
interval = state.interval_choice()
st.caption(f"Intervals shown: **{interval}**: {C.INTERVALS[interval]}.")
root = state.runs_folder()
scan = state.scan()
if scan.root_error:
    st.error(f"Cannot read the runs folder: {scan.root_error}")
    st.stop()
stamps = tuple(sorted((r.label, C.info_stamp(r.path), C.results_stamp(r.path)) for r in scan.runs))
with st.spinner("Pooling seeds and bootstrapping each variant against the released SS4Rec (cached)..."):
    try:
        studies = _studies(str(root), stamps, 2000, interval)
    except Exception as exc:  # never a traceback on the page
        st.error(f"Could not build the ablations from these runs ({type(exc).__name__}): {exc}")
        st.stop()


def _study_top(study: AB.AblationStudy, more: str, chart_title: str) -> None:
    """What a study compares (data, protocol, test users, then `more`), its notes, and its difference chart."""
    st.caption(f"Dataset: {study.data} · Protocol: {study.protocol}"
               + (f" · {study.n_users:,} test users" if study.n_users else "") + more)
    for note in study.notes:
        st.warning(note)
    frame = AB.study_frame(study)
    if not frame.empty:
        show_chart(charts.difference_chart(frame, chart_title))


def _how_time_enters() -> None:
    """Every way time enters an architecture against the same architecture without time (issue 23)."""
    st.header("How time enters")
    st.caption("Each way time can enter a sequential recommender, against the same architecture without time, on the "
               "same test users: SS4Rec's S5 decay by the real gaps (with or without the target's time), SS4Rec with "
               "gap features added to its inputs, SASRec given a gap feature, TiSASRec's relation embeddings of the "
               "intervals between history items. Without time: SS4Rec fed one constant gap everywhere (order kept), "
               "plain SASRec. Rows appear as their runs are trained (`configs/campaigns/ml100k-time.yaml`).")
    with st.spinner("Bootstrapping each way time enters against its architecture without time (cached)..."):
        try:
            tstudies = _time_studies(str(root), stamps, 2000, interval)
        except Exception as exc:  # never a traceback on the page
            st.error(f"Could not build the time comparison from these runs ({type(exc).__name__}): {exc}")
            return
    if not tstudies:
        st.info("No way time enters has its time-free reference in this folder yet: it needs SS4Rec's constant-gap "
                "run or plain SASRec beside a time-aware configuration on the same data and protocol.")
        return
    for ti, study in enumerate(tstudies):
        st.subheader(study.title)
        _study_top(study, "", "Each way time enters minus the same architecture without time (right of 0 = time "
                              "helps), 95% interval")
        st.dataframe(AB.time_table(study), hide_index=True,
                     column_config={"how time enters": st.column_config.TextColumn("how time enters", width="large")})
        for line in AB.conclusions(study):
            st.markdown(f"- {line}")
        st.caption(A.multiplicity_note([c for r in study.rows for c in r.comparisons.values()]))
        with st.expander("NDCG@10 difference by the gap to the predicted interaction"):
            try:
                st.dataframe(_time_by_gap(str(root), stamps, ti, interval), hide_index=True)
            except Exception as exc:
                st.warning(f"No breakdown by gap ({type(exc).__name__}): {exc}")
            st.caption("Inside each bucket: the mean paired difference, its 95% bootstrap interval over the bucket's "
                       "users, and their number. A model told the target's time can only use it where the gap "
                       "varies; 'same second' targets are where SS4Rec's lead concentrates on ML-1M.")


if not studies:
    st.info(f"No ablations in `{root}`: this page needs a complete released SS4Rec run and at least one variant "
            "on the same data and protocol (`make ablations`, README).")
    _how_time_enters()
    st.stop()

st.info(TARGET_TIME_CAVEAT + " The variant **no-target-time** measures how much of SS4Rec's result is that input.")
for si, study in enumerate(studies):
    st.header(study.title)
    _study_top(study, f" · reference: {study.reference.name} ({study.reference.seeds_text}), test NDCG@10 "
                      f"{study.reference.test['ndcg@10'][0]:.4f}.",
               "Each variant minus its reference on test (right of 0 = the variant higher), 95% interval")
    st.dataframe(AB.study_table(study), hide_index=True,  # the long text columns at a width they can be read at
                 column_config={c: st.column_config.TextColumn(c, width="large")
                                for c in ("what changes", "difference (95% CI)", "reading")})
    st.markdown("**Read from the numbers above**")
    for line in AB.conclusions(study):
        st.markdown(f"- {line}")
    st.caption("Test numbers of configurations trained and selected (epoch, early stop) on validation only. "
               "'no detectable difference' means the 95% interval holds 0: not that the two are equal. "
               + A.multiplicity_note([c for r in study.rows for c in r.comparisons.values()]))

    st.subheader("Where the difference comes from")
    names = [f"{r.name} − {r.reference.name}" for r in study.rows]
    default = next((i for i, r in enumerate(study.rows) if r.config.variant == "no-target-time"), 0)
    pick = st.selectbox("Variant", range(len(names)), index=default, format_func=lambda i, names=names: names[i],
                        key=f"abl_row_{si}")
    by = st.radio("Split the test users by", ["gap", "length"], horizontal=True, key=f"abl_by_{si}",
                  format_func=lambda b: {"gap": "gap from the last rating to the predicted one",
                                         "length": "history length (all ratings before the target)"}[b])
    try:
        bd = _breakdown(str(root), stamps, si, pick, by, interval)
    except Exception as exc:
        st.warning(f"No breakdown for this pair ({type(exc).__name__}): {exc}")
        continue
    show_chart(charts.bucket_difference_chart(bd, "users"))
    st.dataframe(bd.assign(bucket=bd["bucket"].astype(str)).round(4).rename(  # readable headers, not raw names
        columns={"users": "users", "configuration": "variant's mean", "reference": "reference's mean",
                 "diff": "difference", "ci_low": "95% CI low", "ci_high": "95% CI high"}), hide_index=True)
    st.caption("Mean paired difference of NDCG@10 inside each bucket, with a 95% bootstrap interval over its users "
               "and their number; small buckets give wide intervals. 'same second': the predicted rating was saved in "
               "the same second as the one before it, which the released SS4Rec is told.")

_how_time_enters()
