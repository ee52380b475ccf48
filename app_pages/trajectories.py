"""State trajectories: step through one user's history as SS4Rec sees it (run and user: the shared sidebar)."""
import datetime as dt

import numpy as np
import pandas as pd
import streamlit as st

from recsys import charts
from recsys.app import state
from recsys.app.common import show_chart
from recsys.app.runs import loaded_run_or_error
from recsys.inference import contributions, genre_affinity, human_gap, state_projection, trajectory, user_history

st.title("State trajectories")
st.caption("Pick an SS4Rec run and a user in the sidebar, then step through their history. At each step the "
           "time-aware S5 layer decays its state by the real gap to the next rating (retention: 1 = nothing "
           "forgotten, 0 = reset) and the model predicts the next movie. Only the last max_len movies are fed, as in "
           "evaluation.")

path = state.require_ss4rec_run().path
run = loaded_run_or_error(path)
if run is None:
    st.stop()
info = run.info
masked = bool(info["protocol"].get("mask_seen"))
st.write(f"**{path.name}** · dataset {info['dataset']['name']} · max length {run.max_len} · "
         f"test NDCG@10 {info['metrics']['test'].get('ndcg@10', float('nan')):.4f} of this one run (seed "
         f"{info['config'].get('seed', '?')}; leave-one-out, full ranking, "
         f"{'seen items masked' if masked else 'seen items not masked'}; the Compare page pools its seeds)")
if info.get("evaluated_from"):
    st.caption(f"A masked re-evaluation of {info['evaluated_from'].get('run_id')}: the same weights, with the epoch "
               "chosen on unmasked validation.")
if not run.fingerprint_matches:
    st.warning("The dataset on this machine differs from the one the run was trained on (fingerprint mismatch).")

user_id = state.require_user()
st.subheader(f"User {user_id}")
try:
    hist = user_history(run, int(user_id))
except KeyError as exc:
    st.warning(f"{exc}. Pick another user.")
    st.stop()


@st.cache_data(show_spinner=False, max_entries=32)
def _trajectory(run_path: str, uid: int, _run=run):
    h = user_history(_run, uid)
    return trajectory(_run, h["item_idx"].to_numpy(), h["timestamp"].to_numpy(), h["rating"].to_numpy(), k=10)


with st.spinner("Running the history through SS4Rec..."):
    tr = _trajectory(str(path), int(user_id))
steps = tr["steps"]
n = len(steps)
if tr["cut"]:
    older = "the first rating is" if tr["cut"] == 1 else f"the first {tr['cut']} are"
    st.info(f"This user has {len(hist)} ratings; {older} older than the model's window "
            f"(max_len {run.max_len}) and not fed, exactly as in evaluation.")

key = f"traj_step_{path.name}_{user_id}"
if key not in st.session_state:
    st.session_state[key] = n
# one flexible row: the buttons as wide as their labels, the slider the rest (fixed-ratio columns cut the labels to
# "..." at 800 px); on a narrow screen the slider wraps below them
stepper = st.container(horizontal=True, vertical_alignment="bottom")
if stepper.button("◀ previous", disabled=st.session_state[key] <= 1):
    st.session_state[key] -= 1
if stepper.button("next ▶", disabled=st.session_state[key] >= n):
    st.session_state[key] += 1
step = stepper.slider("Step", 1, max(n, 2), key=key) if n > 1 else 1
s = steps[step - 1]
when = dt.datetime.fromtimestamp(s["timestamp"], dt.UTC)
genres = run.item_columns["genres"][s["item_idx"]].replace("|", ", ")

stars = f"{s['rating']:g} ★" if s["rating"] is not None else "no rating"
st.markdown(f"#### Step {step} of {n}: {s['title']}")
st.caption(f"{genres} · rated {stars} on {when:%Y-%m-%d %H:%M} UTC")
c = st.columns(3)
c[0].metric("Gap since previous", human_gap(s["gap_before"]))
c[1].metric("Gap to next (fed to S5)", human_gap(s["gap_after"]),
            help="The gap after this movie: the time until the next rating (for the last step, until 'now').")
c[2].metric("S5 retention", f"{np.mean(s['retention']):.3f}",
            help="The S5 state is multiplied by exp(Λ·gap): the mean |Ābar| over its state dimensions. 1 keeps "
                 "everything; near 0 the state is reset.")
st.caption("Retention per layer: " +
           ", ".join(f"layer {i + 1}: {r:.3f}" for i, r in enumerate(s["retention"])) +
           (" · the last step's gap is to 'now' (one day after the last rating)." if step == n else ""))

left, right = st.columns(2)
with left:
    layer = st.radio("Hidden state of layer", list(range(1, len(tr["hidden"]) + 1)), horizontal=True,
                     index=len(tr["hidden"]) - 1)
    proj = state_projection(tr["hidden"][layer - 1])
    path_df = pd.DataFrame({"pc1": proj[:, 0], "pc2": proj[:, 1], "step": np.arange(1, n + 1),
                            "title": [x["title"] for x in steps], "gap": [human_gap(x["gap_after"]) for x in steps]})
    show_chart(charts.state_path_chart(path_df, step, layer))
with right:
    ret = pd.DataFrame({"step": np.arange(1, n + 1), "retention": [np.mean(x["retention"]) for x in steps],
                        "gap": [human_gap(x["gap_after"]) for x in steps]})
    show_chart(charts.retention_chart(ret, step))

all_genres = sorted({g for x in run.prepared.items["genres"] for g in x.split("|") if g})
top_genres = pd.Series([g for x in steps for t in x["top_items"]
                        for g in run.item_columns["genres"][t].split("|") if g]).value_counts().index[:6].tolist()
aff = genre_affinity(run, [x["top_items"] for x in steps], top_genres or all_genres[:6])
show_chart(charts.genre_affinity_chart(aff, step))

nxt = s["next_item"]
seen = {x["item_idx"] for x in steps[:step]}
st.subheader(f"Top-10 predicted next movies for user {user_id} after step {step}")
top = pd.DataFrame({"rank": range(1, len(s["top_titles"]) + 1), "title": s["top_titles"],
                    "genres": [run.item_columns["genres"][i] for i in s["top_items"]],
                    "score (logit)": np.round(s["top_scores"], 3),
                    "already rated": ["yes" if i in seen else "" for i in s["top_items"]],
                    "came next": ["✅" if i == nxt else "" for i in s["top_items"]]})
n_seen = int((top["already rated"] == "yes").sum())
hide = st.toggle("Hide movies the user had already rated by this step", value=False,
                 help="The unmasked protocol ranks every movie, rated or not (the model is not told which were "
                      "seen); the masked one removes them before ranking.")
st.dataframe(top[top["already rated"] != "yes"] if hide else top, hide_index=True, width="stretch")
st.caption(f"{n_seen} of the top {len(top)} were already rated by step {step} "
           f"({n_seen / max(len(top), 1):.0%}). Scores are logits (higher = ranked higher), not predicted ratings.")
if nxt is not None:
    st.write(f"What really came next: **{run.titles([nxt])[0]}**, ranked **{s['next_rank']:,}** of "
             f"{run.prepared.n_items:,} (ties counted against the model).")
else:
    st.write("This is the last rating in the history: the list is the prediction for one day later.")

st.subheader("Why this prediction")
top1 = s["top_items"][0]
targets = [top1] + ([nxt] if nxt is not None and nxt != top1 else [])
names = {top1: f"top recommendation: {run.titles([top1])[0]}"}
if nxt is not None and nxt != top1:
    names[nxt] = f"movie that came next: {run.titles([nxt])[0]}"


@st.cache_data(show_spinner=False, max_entries=64)
def _contributions(run_path: str, uid: int, step: int, targets: tuple, _run=run):
    h = user_history(_run, uid)
    return contributions(_run, h["item_idx"].to_numpy(), h["timestamp"].to_numpy(), step, list(targets))


if step < 2:
    st.caption("With one movie fed there is nothing to take away: contributions start at step 2.")
else:
    with st.spinner("Scoring the history with each movie left out..."):
        contrib = _contributions(str(path), int(user_id), int(step), tuple(targets))
    rows = pd.DataFrame([{"step": p, "title": t, "target": names[tg], "contribution": float(contrib["values"][tg][i])}
                         for tg in targets for i, (p, t) in enumerate(zip(contrib["positions"], contrib["titles"]))])
    cols = st.columns(len(targets))
    for col, tg in zip(cols, targets):
        col.markdown(f"**Score of the {names[tg]}**")  # above the chart: vega cut long titles in a column
        show_chart(charts.contribution_chart(rows[rows["target"] == names[tg]], None), col)
    strongest = rows[rows["target"] == names[top1]].sort_values("contribution", ascending=False)
    lead = strongest.iloc[0]
    st.caption(f"Contribution = the score (logit) with the whole history minus the score with that one movie (and "
               f"its time) left out, the rest unchanged. {lead['title']} (step {lead['step']}) did most for "
               f"{run.titles([top1])[0]} ({lead['contribution']:+.2f}); the score itself is "
               f"{contrib['logit'][top1]:.2f}. Leaving movies out one at a time misses what they do together, and "
               "the time of the predicted interaction stays as it is (SS4Rec is told it).")
