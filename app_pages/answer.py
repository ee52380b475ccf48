"""The answer page: does SS4Rec beat its baselines, on which metric, and by how much -- built from the runs in the
sidebar's folder (recsys.compare.answer), never typed in. Each claim carries its interval, its number of seeds and
the caveats that qualify it, and links to the page that shows the evidence."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from recsys import charts
from recsys import compare as C
from recsys.app import state
from recsys.app.common import show_chart
from recsys.compare import ablations as AB
from recsys.compare import answer as A
from recsys.compare import published as P
from recsys.compare.variants import is_ablation

# text columns that were cut mid-word at their default width
WIDE = {c: st.column_config.TextColumn(c, width="large") for c in ("reading", "beats best floor", "configuration")}


@st.cache_data(show_spinner=False, max_entries=8, persist="disk")  # a fresh server reuses them
def _verdicts(root: str, stamps: tuple, n_boot: int, interval: str
              ) -> tuple[list[A.Verdict], list[A.RatingVerdict]]:
    """Keyed by every run's stamps, so a new or re-trained run changes the answer at once."""
    runs = C.scan_runs(root).runs

    def load(run):
        return C.load_test_results(run.path, run.info)

    return (A.ranking_verdicts(runs, load, n_boot=n_boot, interval=interval),
            A.rating_verdicts(runs, load, n_boot=n_boot))


@st.cache_data(show_spinner=False, max_entries=8, persist="disk")
def _why(root: str, stamps: tuple, n_boot: int, interval: str) -> dict[str, list[str]]:
    """The ablation conclusions (NDCG@10 only) per group title, for the summary under each verdict."""
    runs = C.scan_runs(root).runs
    studies = AB.ablation_studies(runs, lambda run: C.load_test_results(run.path, run.info), metrics=("ndcg@10",),
                                  n_boot=n_boot, interval=interval)
    return {s.title: AB.conclusions(s) for s in studies}


def _link(page: str, label: str) -> None:
    try:
        st.page_link(page, label=label, icon=":material/arrow_forward:")
    except Exception:  # the page run on its own (no navigation declared): a plain pointer instead
        st.caption(f"→ {label}")


def _published(v: A.Verdict) -> None:
    """Published numbers of the same dataset beside ours, for the unmasked verdict (the published protocol)."""
    if v.masked or v.dataset not in P.WHY_THEY_DIFFER:
        return
    ours: dict[str, tuple[float, float, float]] = {}
    for c in v.contenders:  # the chosen (best on validation) configuration of each model
        if c.model not in ours and not is_ablation(c.seeds.info) and all(m in c.test for m in
                                                                          ("hr@10", "ndcg@10", "mrr@10")):
            ours[c.model] = (c.test["hr@10"][0], c.test["ndcg@10"][0], c.test["mrr@10"][0])
    table = P.published_table(v.dataset, ours)
    if table.empty:
        return
    with st.expander("Published numbers beside this reproduction"):
        st.dataframe(table, hide_index=True)
        st.caption(P.WHY_THEY_DIFFER[v.dataset])


st.title("Does SS4Rec beat its baselines?")
root = state.runs_folder()
scan = state.scan()
st.caption(f"Built just now from the runs in `{root}`: nothing on this page is typed in by hand. The configuration "
           "that stands for each model is the one with the best mean **validation** NDCG@10 over its seeds (and each "
           "run's epoch was chosen on validation); test numbers are read once. Differences are paired bootstraps "
           "over the same test users.")
st.caption("**Masked or unmasked.** The SS4Rec paper and RecBole rank every movie, already-rated ones included "
           "(unmasked): those are the groups to set beside published numbers. Masked groups drop already-rated "
           "movies from the ranking; every model scores higher there, so masked and unmasked numbers never mix.")
interval = state.interval_choice()
st.caption(f"Intervals shown: **{interval}**: {C.INTERVALS[interval]}.")
if scan.root_error:
    st.error(f"Cannot read the runs folder: {scan.root_error}")
    st.stop()
if not scan.runs:
    st.info(f"No runs found in `{root}`: train some with `make checkpoints` (README), or point the sidebar's runs "
            "folder at a folder of runs.")
    st.stop()

stamps = tuple(sorted((r.label, C.info_stamp(r.path), C.results_stamp(r.path)) for r in scan.runs))
with st.spinner("Pooling seeds and bootstrapping the differences (cached after the first time)..."):
    try:
        verdicts, rating = _verdicts(str(root), stamps, 2000, interval)
        why = _why(str(root), stamps, 2000, interval)
    except Exception as exc:  # never a traceback on the page
        st.error(f"Could not build the answer from these runs ({type(exc).__name__}): {exc}")
        st.stop()
skipped = [r for r in scan.runs if r.problem]
if scan.errors or skipped:
    st.caption(f"Not used: {len(scan.errors)} unreadable folder(s) and {len(skipped)} run(s) that failed a check "
               "(listed on Compare runs).")

if not verdicts:
    st.info("No ranking runs of a learned model are complete in this folder yet.")

for v in verdicts:
    st.header(v.title)
    if v.ss4rec is None:
        st.info(v.headline)
    else:
        main = next((c for c in v.comparisons if c.metric == v.metric and not c.problem), None)
        box = st.info if main is None or not main.reliable else (st.success if main.a_better else st.warning)
        box(v.headline)
    md = C.metric_display(v.metric)
    cols = st.columns(3)
    for col, who, role in ((cols[0], v.ss4rec, "SS4Rec"), (cols[1], v.baseline, "Best baseline"),
                           (cols[2], v.floor, "Best floor")):
        if who is None:
            col.metric(role, "none", help="no complete run of this kind in this group")
            continue
        mean, sd, _ = who.test[v.metric]
        # the mean as the big number, its sd in the line under it: "0.0600 ± 0.0029" was cut to "0.0600 …" at 800 px
        col.metric(f"{role} · {md}", f"{mean:.4f}",
                   help=f"{who.name}: mean ± sd over {who.seeds_text} of test {md}; chosen on validation "
                        f"{md} ({who.valid:.4f})")
        col.caption(("" if sd != sd else f"± {sd:.4f} sd · ") + f"{who.name} · {who.seeds_text}"
                    + ("" if who.beats_floor is not False else " · ⚠️ not reliably above the best floor"))
    diffs = A.differences_frame(v.comparisons)
    if not diffs.empty:
        show_chart(charts.difference_chart(diffs, "SS4Rec minus each rival on test (right of 0 = SS4Rec "
                                                       "higher)"))
    if v.comparisons:
        st.dataframe(A.differences_table(v.comparisons), hide_index=True, column_config=WIDE)
        st.caption(f"Paired bootstrap over the {v.n_users or 'same'} test users ({v.comparisons[0].n_boot:,} "
                   f"resamples; {C.INTERVALS[interval]}); p is the bootstrap sign-consistency p-value, p (Holm) the "
                   "same adjusted over every comparison of this group (these and the SS4Rec configurations below). "
                   + A.multiplicity_note(v.comparisons + v.variants))
    with st.container(border=True):
        st.markdown("**Caveats for these numbers**")
        for line in v.caveats:
            st.markdown(f"- {line}")
    with st.expander(f"Every configuration in this group ({len(v.contenders)})"):
        st.dataframe(A.contender_table(v), hide_index=True, column_config=WIDE)
        st.caption(f"Dataset: {v.data} · Protocol: {v.protocol}"
                   + (f" · {v.n_users:,} test users" if v.n_users else "") + ". 'beats best floor': yes only when "
                   "the paired 95% interval of (configuration − best floor) on test lies above 0.")
    _published(v)
    if why.get(v.title):
        st.subheader("Why: what SS4Rec's result rests on (ablations)")
        for line in why[v.title]:
            st.markdown(f"- {line}")
        _link("app_pages/ablations.py", "What matters: these ablations with HR/MRR@10, their intervals drawn, and "
              "where each difference comes from (by the gap to the predicted rating, by history length)")
    if v.variants:
        st.subheader("Other SS4Rec configurations on the same data")
        show_chart(charts.difference_chart(A.differences_frame(v.variants, name="a"),
                                                "Each SS4Rec configuration minus the chosen one (test, 95% CI)"))
        st.dataframe(A.differences_table(v.variants), hide_index=True, column_config=WIDE)
        st.caption("Configurations that differ from the chosen SS4Rec in one or more settings (ablations, recipes). "
                   "A variant that is reliably lower points at what the chosen configuration relies on; these are "
                   "read on test after the choice was made on validation.")

st.header("Rating prediction")
if not rating:
    st.info("No complete rating runs in this folder.")
for rv in rating:
    st.subheader(rv.title)
    c = rv.comparison
    box = st.info if c is None or c.problem or not c.reliable else (st.success if c.a_better else st.warning)
    box(rv.headline)
    if c is not None and not c.problem:
        show_chart(charts.difference_chart(A.differences_frame([c]), f"{c.a} minus {c.b}: test RMSE (left "
                                                f"of 0 = {c.a} better)"))
        st.dataframe(A.differences_table([c]), hide_index=True, column_config=WIDE)
    extra = [x for x in rv.ss4rec if c is None or (x.a, x.b) != (c.a, c.b)]  # the headline's pair is drawn above
    ok = [x for x in extra if not x.problem]
    if extra:
        st.markdown("**SS4Rec's best rating configuration (chosen on validation RMSE) against its rivals** (the best "
                    "other learned model, NCF, the best floor)")
        for x in extra:
            st.markdown(f"- {A.comparison_text(x)}")
        if ok:
            show_chart(charts.difference_chart(A.differences_frame(ok), "SS4Rec minus rival: test RMSE (left of "
                                                    "0 = SS4Rec better)"))
    with st.container(border=True):
        st.markdown("**Caveats**")
        for line in rv.caveats:
            st.markdown(f"- {line}")
    rows = [{"configuration": x.name, "role": "chosen" if x is rv.model else "floor" if x.floor else
             "ablation (not a candidate)" if is_ablation(x.seeds.info) else "",
             "valid RMSE (selection)": f"{x.valid:.4f}" if x.valid == x.valid else "",
             "test RMSE": A.mean_sd_text(x.test["rmse"]), "test MAE": A.mean_sd_text(x.test["mae"]),
             "seeds": x.seeds_text} for x in rv.contenders]
    with st.expander(f"Every rating configuration ({len(rows)})"):
        st.dataframe(pd.DataFrame(rows), hide_index=True)
        st.caption(f"Protocol: {rv.protocol}.")

st.header("Where to look next")
_link("app_pages/compare.py", "Compare runs: every table, learning curves with seed bands, any paired bootstrap, "
      "breakdowns by activity and time gap")
_link("app_pages/ablations.py", "What matters: SS4Rec's ablations (time, order, the target-time input, each layer) "
      "against the released model")
_link("app_pages/trajectories.py", "State trajectories: SS4Rec's time-aware state for one user, step by step")
_link("app_pages/live.py", "Live recommendations: edit a history and its time gaps and watch the scores move")
st.caption("docs/results.md holds the fidelity table (which changes to SS4Rec's training mattered), the cost "
           "benchmark and the commands behind every run.")
