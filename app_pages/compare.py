"""Compare runs: metrics side by side only where comparable, learning curves, paired bootstrap, breakdowns.

All logic lives in recsys.compare and every chart in recsys.charts; this page only arranges widgets. The runs folder
is the shared sidebar's (recsys.app.state).
"""
from __future__ import annotations

import hashlib

import pandas as pd
import streamlit as st

from recsys import charts
from recsys import compare as C
from recsys.app import state
from recsys.app.common import show_chart
from recsys.compare import answer as A
from recsys.compare.answer import MASKED_CAVEAT, TARGET_TIME_CAVEAT


@st.cache_data(show_spinner=False, max_entries=64)
def _test_results(path: str, stamp: float, info: dict) -> pd.DataFrame:
    return C.load_test_results(path, info)


def results_or_reason(run: C.Run) -> tuple[pd.DataFrame | None, str | None]:
    try:
        return _test_results(str(run.path), C.results_stamp(run.path), run.info), None
    except C.RunError as exc:
        return None, str(exc)
    except Exception as exc:  # never a traceback on the page
        return None, f"{run.label}: unreadable test results ({type(exc).__name__}: {exc})"


def history_of(run: C.Run) -> list[dict]:
    return C.read_history(run.path)


@st.cache_data(show_spinner=False, max_entries=32)
def _bootstrap(pa: str, sa: float, ia: dict, pb: str, sb: float, ib: dict, family: str, metric: str, n_boot: int,
               seed: int, names: tuple[str, str]) -> dict:
    return C.compare_pair(_test_results(pa, sa, ia), _test_results(pb, sb, ib), family, metric, n_boot=n_boot,
                          seed=seed, names=names)


@st.cache_data(show_spinner=False, max_entries=32)
def _pooled(runs_a: tuple, runs_b: tuple, metric: str, n_boot: int, seed: int, interval: str) -> dict:
    """Two configurations (each a tuple of (path, stamp, info) of its seeds): the bootstrap, the per-user
    differences and their win / tie / loss counts."""
    fa = [_test_results(p, st_, i) for p, st_, i in runs_a]
    fb = [_test_results(p, st_, i) for p, st_, i in runs_b]
    res = C.compare_configurations(fa, fb, metric, n_boot=n_boot, seed=seed, interval=interval)
    diffs = C.per_user_differences(fa, fb, metric)
    return {**res, "differences": diffs.to_numpy(), **C.win_tie_loss(diffs)}


def _show_configurations(runs: list, gkey: str, metric: str, n_boot: int, seed: int) -> None:
    """Compare two configurations with their seeds pooled (the answer page's computation), win / tie / loss per
    user and the histogram of per-user differences."""
    groups = C.seed_groups(runs)
    if len(groups) < 2:
        st.info("This group holds one configuration: compare single runs (its seeds) instead.")
        return
    labels = C.configuration_labels(groups)
    ia, ib = C.default_configuration_pair(groups)
    c1, c2 = st.columns(2)
    a = c1.selectbox("Configuration A", range(len(groups)), index=ia, format_func=lambda i: labels[i],
                     key=f"cfg-a::{gkey}")
    b = c2.selectbox("Configuration B", range(len(groups)), index=ib, format_func=lambda i: labels[i],
                     key=f"cfg-b::{gkey}")
    if a == b:
        st.warning("Pick two different configurations.")
        return
    interval = state.interval_choice()
    pack = [tuple((str(m.path), C.results_stamp(m.path), m.info) for m in groups[i].members) for i in (a, b)]
    try:
        res = _pooled(pack[0], pack[1], metric, n_boot, seed, interval)
    except (C.SeedAlignmentError, ValueError) as exc:
        st.error(f"Cannot compare these configurations: {exc}")
        return
    md = C.metric_display(metric)
    cols = st.columns([1, 2, 1])
    cols[0].metric("A − B", f"{res['diff']:+.4f}", help=f"{labels[a]} minus {labels[b]}, test {md}")
    cols[1].metric("95% CI of A − B", f"{res['ci_low']:+.4f} … {res['ci_high']:+.4f}")
    cols[2].metric("p-value", C.format_p(res["p_value"], res["n_boot"]))
    reliable = not res["ci_low"] <= 0 <= res["ci_high"]
    (st.success if reliable else st.info)(
        f"{labels[a]} − {labels[b]} on test {md}: {res['diff']:+.4f} (95% CI {res['ci_low']:+.4f} … "
        f"{res['ci_high']:+.4f}); " + ("the interval excludes 0." if reliable else "the interval includes 0: no "
                                       "reliable difference."))
    cols = st.columns(3)
    cols[0].metric("Users A serves better", f"{res['wins']:,}")
    cols[1].metric("Ties", f"{res['ties']:,}", help="the same value for both, e.g. both miss the top-K")
    cols[2].metric("Users B serves better", f"{res['losses']:,}")
    show_chart(charts.difference_histogram(res["differences"], f"Per-user test {md}, A − B (seeds averaged)"))
    st.caption(f"{res['n_boot']:,} resamples, seed {seed}; intervals: {interval} ({C.INTERVALS[interval]}). "
               f"A: {groups[a].seeds_text()}; B: {groups[b].seeds_text()}; {res['n']:,} test users.")


def _show_runs(loaded: dict, group, gkey: str, metric: str, n_boot: int, seed: int) -> None:
    """Compare two single runs of the group (paired bootstrap of their per-user or per-rating results)."""
    opts = list(loaded)
    ia, ib = C.default_pair([loaded[o][0] for o in opts])  # best SS4Rec vs the best run of another model
    c1, c2 = st.columns(2)
    a = c1.selectbox("Run A", opts, index=ia, key=f"boot-a::{gkey}")
    b = c2.selectbox("Run B", opts, index=ib, key=f"boot-b::{gkey}")
    if a == b:
        st.warning("Pick two different runs.")
        return
    ra, rb = loaded[a][0], loaded[b][0]
    try:
        res = _bootstrap(str(ra.path), C.results_stamp(ra.path), ra.info, str(rb.path),
                         C.results_stamp(rb.path), rb.info, group.family, metric, n_boot, seed, (a, b))
    except (C.ComparisonError, ValueError) as exc:
        st.error(f"Cannot compare these runs: {exc}")
        return
    md = C.metric_display(metric)
    cols = st.columns(3)
    cols[0].metric(f"{md} A", f"{res['mean_a']:.4f}", help=a)
    cols[1].metric(f"{md} B", f"{res['mean_b']:.4f}", help=b)
    cols[2].metric("n", f"{res['n']:,}", help=res["unit"])
    cols = st.columns([1, 2, 1])  # the interval gets the room it needs to be read whole
    cols[0].metric("A − B", f"{res['diff']:+.4f}")
    cols[1].metric(f"{1 - res['alpha']:.0%} CI of A − B", f"{res['ci_low']:+.4f} … {res['ci_high']:+.4f}")
    cols[2].metric("p-value", C.format_p(res["p_value"], res["n_boot"]),
                   help=f"bootstrap sign-consistency p-value, resolution 1/{res['n_boot']}")
    reliable = not res["ci_low"] <= 0 <= res["ci_high"]
    (st.success if reliable else st.info)(C.comparison_sentence(res, a, b))
    how = ("per-user values, users resampled with replacement (one run each: training randomness is not in the "
           "interval)" if group.family == "ranking" else
           "RMSE recomputed as sqrt(mean squared error) on each resample of held-out ratings"
           if metric == "rmse" else "per-rating absolute errors resampled with replacement")
    st.caption(f"Paired bootstrap ({res['n_boot']:,} resamples, seed {seed}; {how}); rows matched by "
               f"{'user' if group.family == 'ranking' else '(user, item)'}. " + C.group_caption(group, "test"))


def _run_table(all_runs: list, default: list[str], root: str) -> list[str]:
    """The run table: filters, one row per run (what tells it apart, its cost and hardware), a tick per run used by
    the tables below; and the configuration difference between any two runs. Returns the ticked labels."""
    from recsys.compare import runtable as RT

    ticked_key = f"rt-ticked::{root}"  # the ticks outlive filter changes (a plain key, not a widget's)
    ticked: set[str] = st.session_state.setdefault(ticked_key, set(default))
    table = RT.run_table(all_runs, sorted(ticked))
    st.subheader("Runs")
    cols = st.columns(5)
    picks = {c: cols[i].multiselect(c.capitalize(), sorted(table[c].dropna().unique().tolist(), key=str),
                                    key=f"rt-{c}::{root}")
             for i, c in enumerate(("model", "dataset", "protocol", "variant", "seed"))}
    shown = RT.filter_runs(table, **picks)
    # the editor's key follows the filters and the ticks, so a filtered view always starts from the ticks kept
    state_id = hashlib.sha256(repr((sorted(map(str, picks.items())), sorted(ticked))).encode()).hexdigest()[:16]
    edited = st.data_editor(
        shown, hide_index=True, disabled=[c for c in RT.COLUMNS if c != "show"], key=f"rt-table::{root}::{state_id}",
        column_config={"show": st.column_config.CheckboxColumn("use", help="use this run in the tables below"),
                       "parameters": st.column_config.NumberColumn(format="%d"),
                       "test NDCG@10": st.column_config.NumberColumn(format="%.4f"),
                       "test RMSE": st.column_config.NumberColumn(format="%.4f")})
    st.caption("Tick the runs the tables below use (default: every complete run of the embedded ML-100K except the "
               "ablations, which What matters compares). The filters narrow the table; ticks outside it stay as "
               "they were. train min and s/epoch: training time as recorded (evaluation included), on the hardware "
               "named.")
    now = RT.apply_ticks(ticked, shown["run"].tolist(), edited)
    if now != ticked:
        st.session_state[ticked_key] = ticked = now
    with st.expander("Configuration difference between two runs"):
        labels = table["run"].tolist()
        c1, c2 = st.columns(2)
        a = c1.selectbox("Run", labels, key=f"rt-a::{root}")
        b = c2.selectbox("against", labels, index=min(1, len(labels) - 1), key=f"rt-b::{root}")
        by = {r.label: r for r in all_runs}
        if a == b:
            st.info("Pick two different runs.")
        else:
            diff = RT.config_difference(by[a], by[b])
            if diff.empty:
                st.info("No setting differs.")
            else:
                st.dataframe(diff, hide_index=True, key=f"rt-diff::{root}")
    return [lab for lab in table["run"] if lab in ticked]  # in the folder's order


st.title("Compare runs")
st.caption("Runs are put side by side only when they were evaluated on the same data (dataset, fingerprint, filters) "
           "with the same protocol; every table and chart names its dataset, split and protocol.")

root = state.runs_folder()  # typed in the sidebar
scan = state.scan()
if scan.root_error:
    st.error(f"Cannot read the runs folder: {scan.root_error}")
    st.stop()
if scan.errors:
    with st.expander(f"{len(scan.errors)} folder(s) in {root.name}/ could not be loaded", icon="⚠️"):
        for path, message in scan.errors:
            st.markdown(f"**{path.name}**")
            st.text(message)
flagged = [r for r in scan.runs if r.problem]
if flagged:
    with st.expander(f"{len(flagged)} run(s) failed a check: marked in the tables, their numbers not used",
                     icon="🚫", expanded=True):
        for r in flagged:
            st.markdown(f"**{r.label}** · {r.status}")
            st.text(r.problem)
if not scan.runs:
    st.info(f"No runs found in `{root}` — train one with `python scripts/train.py --model ncf` "
            "(or `--model ss4rec`, `--model popular`, `--model bias`, `--model global-mean`).")
    st.stop()

running = [r for r in scan.runs if r.status == "running"]
if running:
    with st.expander(f"{len(running)} run(s) still training — partial history", expanded=False):
        for r in running:
            h = history_of(r)
            st.badge("running", icon=":material/hourglass_top:", color="orange")
            st.markdown(f"**{r.label}** · {C.model_label(r.info)} · {len(h)} epoch(s) so far · "
                        f"{C.protocol_summary(r.info)}")
            metric = C.monitored_metric(r.info)[0]
            train, valid = C.learning_curves([(r.label, r.info, h)], metric)
            if train.empty and valid.empty:
                st.caption("No epoch finished yet.")
                continue
            c1, c2 = st.columns(2)
            if not train.empty:
                show_chart(charts.curve_chart(train, "Training loss (training data)", "train loss"), c1)
            if not valid.empty:
                show_chart(charts.curve_chart(valid, f"Validation {C.metric_display(metric)} (validation users)",
                                                   f"valid {metric}"), c2)
            st.caption(f"Dataset: {C.dataset_summary(r.info)} · ◆ = best epoch so far.")

labels = [r.label for r in scan.runs]
by_label = {r.label: r for r in scan.runs}
default = C.default_selection(scan.runs) or [r.label for r in scan.runs if r.status == "complete"] or labels
chosen = _run_table(scan.runs, default, str(root))
runs = [by_label[lab] for lab in chosen]
if not runs:
    st.info("Select at least one run.")
    st.stop()

c1, c2 = st.columns(2)
split = c1.radio("Metrics of", ["test", "valid"], horizontal=True,
                 help="test: the held-out interactions; valid: the ones used to pick the best epoch.")
ks = C.available_ks(runs) or [10]
k = c2.selectbox("K for HR/NDCG/MRR", ks, index=ks.index(10) if 10 in ks else 0)

groups = C.group_runs(runs)
st.header("Metrics by comparable group")
st.caption("Blank = the metric does not apply to the run (or the run has not finished); never 0. Floors (global "
           "mean, bias, recent residual, popular, Markov) are closed-form reference models every learned model should "
           "beat; they have no epochs.")
for g in groups:
    st.subheader(C.group_title(g))
    if any(m.status == "running" for m in g.members):
        st.badge("contains running runs: metrics appear when they finish", color="orange")
    configs = C.seed_groups(g.members)
    pooled = C.seed_table(configs, k=k, split=split, family=g.family)
    flag_col, lower = ("RMSE", True) if g.family == "rating" else (f"NDCG@{k}", False)
    shown = C.format_seed_table(pooled, k=k)
    seed_frames = [[results_or_reason(m)[0] for m in cfg.members] for cfg in configs]
    seed_frames = [None if any(f is None for f in fs) else fs for fs in seed_frames]
    by_interval = split == "test" and g.family == "ranking"  # per-user results exist for test only
    shown.insert(1, "beats best floor", C.interval_floor_flags(pooled, seed_frames, flag_col, f"ndcg@{k}")
                 if by_interval else C.floor_flags(pooled, flag_col, lower))
    if split == "test":
        ci_metric = "rmse" if g.family == "rating" else f"ndcg@{k}"
        cis = []
        for cfg in configs:
            frames = [results_or_reason(m)[0] for m in cfg.members]
            lo, hi = ((float("nan"), float("nan")) if any(f is None for f in frames)
                      else A.interval_over_users(frames, g.family, ci_metric))
            cis.append(f"{lo:.4f} … {hi:.4f}" if lo == lo else "")
        after = "RMSE" if g.family == "rating" else f"NDCG@{k}"
        at_col = list(shown.columns).index(after) + 1 if after in shown.columns else 2
        shown.insert(at_col, f"{C.metric_display(ci_metric)} 95% CI (users)", cis)
    st.dataframe(shown, hide_index=True)
    table = C.metrics_table(g.members, k=k, split=split, family=g.family)
    # a group holds one family of metrics: the other family's columns would be blank in every row
    table = table.drop(columns=[c for c in C.metric_columns(k) if table[c].isna().all()])
    each = C.format_table(table)
    each.insert(2, "beats best floor", C.floor_flags(table, flag_col, lower))
    with st.expander(f"Each run ({len(g.members)}: every seed of every configuration)"):
        st.dataframe(each, hide_index=True)
    selected_on = "validation RMSE" if g.family == "rating" else "validation NDCG@10"
    st.caption("One row per configuration: runs that differ only in their seed are pooled as mean ± sd over seeds "
               "(sd needs two seeds; floors fitted in closed form are deterministic). 'beats best floor': "
               + (f"yes only when the paired 95% interval (seeds and users resampled) of {flag_col} minus the best "
                  "floor's lies above 0" if by_interval else
                  f"compares the means of {flag_col} with the best floor of this table (no per-user results on "
                  "this split, so no interval)") + "; the 95% "
               "CI is a bootstrap over the held-out users (rows, for ratings) of the seed-averaged values. Each "
               f"learned run's epoch was selected on {selected_on}. " + C.group_caption(g, split))
    note = C.max_len_note(g)
    if note:
        st.caption(note)
    if g.family == "ranking" and any(m.info.get("model") == "ss4rec" for m in g.members):
        st.caption("⚠️ " + TARGET_TIME_CAVEAT)
    sources = [(m.info.get("evaluated_from") or {}).get("changed") or {} for m in g.members
               if isinstance(m.info.get("evaluated_from"), dict)]
    n_masked = sum(1 for ch in sources if ch.get("mask_seen"))
    if n_masked:
        st.caption(f"⚠️ {n_masked} run(s) here are masked re-evaluations: " + MASKED_CAVEAT)
    if len(sources) > n_masked:
        st.caption(f"⚠️ {len(sources) - n_masked} run(s) here re-evaluate another run's saved (best-validation) "
                   "weights with only evaluation settings changed; their epoch counts are the source run's.")
if len(groups) > 1:
    with st.container(border=True):
        st.markdown("**Why these runs are in separate tables**")
        for line in C.explain_differences(groups):
            st.markdown(f"- {line}")

st.header("Details of one group")
gi = st.selectbox("Group", list(range(len(groups))), format_func=lambda i: C.group_title(groups[i]),
                  index=C.default_group(groups), key=f"group-{len(groups)}")
group = groups[gi]
gkey = f"{root}|{group.family}|{'|'.join(group.labels)}"  # widget state never leaks between groups or folders
names = C.run_names(group.members)
tab_curves, tab_boot, tab_break = st.tabs(["Learning curves", "Paired bootstrap", "Breakdowns"])

with tab_curves:
    reevaluated = {n: m.info["evaluated_from"] for n, m in zip(names, group.members)
                   if isinstance(m.info.get("evaluated_from"), dict)}
    if reevaluated:  # their history.jsonl is the training run's: plotting it here would pass it off as theirs
        st.info("No learning curve of their own for " + "; ".join(
            f"{n} (same weights as {src.get('run_id', 'its training run')}, re-evaluated with "
            f"{', '.join(f'{k}={v}' for k, v in (src.get('changed') or {}).items()) or 'another protocol'}; "
            f"epoch chosen on that run's validation)" for n, src in reevaluated.items())
            + ". Their training curves are in the group of the runs they were trained as.")
    hist = [(n, m.info, history_of(m)) for n, m in zip(names, group.members) if n not in reevaluated]
    hist = [x for x in hist if x[2]]
    metrics = [m for m in C.valid_metric_names(h for _, _, h in hist)
               if (m.split("@")[0] in ("rmse", "mae")) == (group.family == "rating")]
    no_hist = [n for n, m in zip(names, group.members) if not history_of(m) and n not in reevaluated]
    if not hist or not metrics:
        st.info("No per-epoch history of its own in this group (floors are fitted in closed form; a run that has "
                "not finished an epoch has none yet).")
    else:
        default_metric = C.monitored_metric(hist[0][1])[0]
        metric = st.selectbox("Validation metric", metrics,
                              index=metrics.index(default_metric) if default_metric in metrics else 0,
                              format_func=C.metric_display, key=f"curve-metric::{gkey}")
        train, valid = C.learning_curves(hist, metric)
        seeds = C.seed_groups(group.members)
        label_of_run = {n: lab for n, m in zip(names, group.members)
                        for cfg, lab in zip(seeds, C.configuration_labels(seeds)) if m in cfg.members}
        pooled = any(len(cfg.members) > 1 for cfg in seeds) and st.toggle(
            "Pool the seeds of each configuration (mean line, band = lowest to highest seed)", value=True,
            key=f"curve-pool::{gkey}")
        c1, c2 = st.columns(2)
        vtitle, vaxis = f"VALIDATION {C.metric_display(metric)} (validation users)", f"valid {C.metric_display(metric)}"
        ttitle = "TRAINING loss (on training interactions)"
        for col, frame, title, axis in ((c1, train, ttitle, "train loss"), (c2, valid, vtitle, vaxis)):
            if frame.empty:
                continue
            show_chart(charts.seed_band_chart(C.seed_band(frame, label_of_run), title, axis) if pooled
                       else charts.curve_chart(frame, title, axis), col)
        st.caption("Left: training loss per epoch; losses differ between models (BCE with sampled negatives, full "
                   "softmax, MSE), so compare shapes, not levels. Right: validation metric per epoch. "
                   + ("Line = mean over the seeds that reached the epoch, band = lowest to highest seed (a seed that "
                      "stopped early leaves the band). " if pooled else
                      "◆ = best epoch (the weights that were tested; best so far for running runs). ")
                   + C.group_caption(group, "valid"))
    if no_hist:
        st.caption("Without per-epoch history: " + ", ".join(no_hist) + ".")

loaded, missing = {}, {}
for n, m in zip(names, group.members):
    df, why = results_or_reason(m)
    if df is None:
        missing[n] = why
    else:
        loaded[n] = (m, df)

with tab_boot:
    if missing:
        st.caption("Without per-user test results: " + "; ".join(f"{n} ({w})" for n, w in missing.items()))
    if len(loaded) < 2:
        st.info("A paired comparison needs two runs of this group with per-user test results.")
    else:
        opts = list(loaded)
        pooled = group.family == "ranking" and st.radio(
            "Compare", ["configurations", "runs"], horizontal=True, key=f"boot-mode::{gkey}",
            format_func=lambda m: {"configurations": "configurations, seeds pooled (as the answer page)",
                                   "runs": "single runs"}[m]) == "configurations"
        c3, c4, c5 = st.columns(3)
        metric = c3.selectbox("Metric", C.comparison_metrics(group.family, [k] + [x for x in ks if x != k]),
                              format_func=C.metric_display, key=f"boot-metric::{gkey}")
        asked = int(c4.number_input("Bootstrap resamples", value=2000, step=500,
                                    help="200 to 20,000; more resamples, finer p-values and steadier interval ends"))
        n_boot = min(max(asked, 200), 20000)
        if n_boot != asked:
            st.warning(f"{asked:,} resamples is outside 200–20,000: using {n_boot:,}.")
        seed = int(c5.number_input("Seed", 0, 2**31 - 1, 0))
        if pooled:
            _show_configurations([loaded[o][0] for o in opts], gkey, metric, n_boot, seed)
        else:
            _show_runs(loaded, group, gkey, metric, n_boot, seed)

with tab_break:
    if not loaded:
        st.info("No run of this group has per-user test results yet.")
    else:
        c1, c2 = st.columns(2)
        bmetric = c1.selectbox("Breakdown metric", C.comparison_metrics(group.family, [k]),
                               format_func=C.metric_display,
                               key=f"breakdown-metric::{gkey}")
        scheme = c2.radio("Activity buckets", ["fixed", "quantile"], horizontal=True,
                          format_func=lambda s: "fixed bins (≤20, 21–50, 51–100, 101–200, >200)" if s == "fixed"
                          else "quartiles of the users")
        frames = {n: df for n, (_, df) in loaded.items()}
        if group.family == "ranking":  # one bar per configuration: per-user metrics averaged over its seeds
            frames, pool_problems = C.pooled_breakdown_frames({n: m for n, (m, _) in loaded.items()}, frames)
            for why in pool_problems:
                st.caption(why)
        md = C.metric_display(bmetric)
        unit = "users" if group.family == "ranking" else "held-out ratings"
        for by, title, x_title in (
                ("activity", f"{md} by user activity", "interactions before the held-out one"),
                ("gap", f"{md} by the time gap before the held-out interaction",
                 "time since the user's previous interaction")):
            st.subheader(title)
            df, skipped, borrowed = C.breakdown(frames, by, group.family, bmetric, scheme=scheme)
            if df.empty:
                st.caption(f"Skipped: no run of this group records the "
                           f"{'history length' if by == 'activity' else 'time gap'} of its held-out rows "
                           f"(rating runs do not). " + C.group_caption(group, "test"))
                continue
            show_chart(charts.breakdown_chart(df, md, x_title))
            notes = [f"Bars: {md} of the {unit} in each bucket; the black line is its 95% bootstrap interval "
                     f"(1,000 resamples of the bucket's {unit}) and the number above it is how many: a bucket of a "
                     f"dozen {unit} says little. "
                     + ("Seeds of one configuration are pooled (per-user values averaged over its seeds). "
                        if group.family == "ranking" else "")
                     + C.group_caption(group, "test")]
            if borrowed:
                notes.append(f"Buckets of rating runs use {borrowed}'s record of the same held-out interactions.")
            if skipped:
                notes.append("Not shown: " + "; ".join(f"{n} ({w})" for n, w in skipped.items()) + ".")
            st.caption(" ".join(notes))
