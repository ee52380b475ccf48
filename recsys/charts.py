"""Every chart of the dashboard, built in one place: plain functions from DataFrames to Altair charts.

Pages compute their frames with recsys.explore / recsys.compare / recsys.inference, pass them here, and only lay the
returned charts out, so a chart's look is defined once and each builder is tested without Streamlit
(tests/test_charts.py). Each builder accepts an empty frame (even one without columns) and returns an empty chart
rather than raising; field types are spelled out (``:Q``, ``:N``, ...) so nothing depends on inferring them from data.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import altair as alt
import numpy as np
import pandas as pd

from recsys import catalogue


def _frame(df: pd.DataFrame | None, columns: Sequence[str]) -> pd.DataFrame:
    """`df`, or an empty frame with `columns` when it has no rows and lacks some of them (a chart of nothing)."""
    if df is None or (df.empty and not set(columns) <= set(df.columns)):
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    return df


# ------------------------------------------------------------------------------------------------ Compare runs


# One colour per model in every chart: a run, configuration or seed of a model is drawn in that model's colour (later
# labels of the same model in lighter shades of it, so seeds stay apart). Labels start with the model's display name
# (recsys.catalogue display names: "SS4Rec", "SASRec · len50 (3 seeds)", "GRU4Rec [gru4rec-...-seed1]", ...).
# The colours are the models' cards' (recsys/catalogue.py): a new model brings its own.
OTHER_COLOURS = ["#ff7f0e", "#e377c2", "#393b79", "#637939", "#8c6d31", "#843c39"]


def _lighten(colour: str, amount: float) -> str:
    """Towards white by `amount` (0..1); a negative amount goes towards black instead."""
    rgb = [int(colour[i:i + 2], 16) for i in (1, 3, 5)]
    if amount < 0:
        return "#" + "".join(f"{round(c * (1 + amount)):02x}" for c in rgb)
    return "#" + "".join(f"{round(c + (255 - c) * amount):02x}" for c in rgb)


# the k-th run or configuration of one model: its hue, alternately lighter and darker, so three SS4Rec variants are
# told apart (steps of +0.3 lightness gave three near-identical pinks)
SHADES = (0.0, 0.45, -0.4, 0.7, -0.6)


def model_colour_scale(labels) -> alt.Scale:
    """A colour scale over `labels` (in their order) that gives every label of one model that model's colour."""
    domain = list(dict.fromkeys(str(x) for x in labels))
    seen: dict[str, int] = {}
    rng, others = [], iter(OTHER_COLOURS * 4)
    colours = catalogue.colours()
    for label in domain:
        model = next((m for m in sorted(colours, key=len, reverse=True) if label.startswith(m)), None)
        base = colours[model] if model else next(others)
        k = seen.get(model or label, 0)
        seen[model or label] = k + 1
        rng.append(_lighten(base, SHADES[k % len(SHADES)]))
    return alt.Scale(domain=domain, range=rng) if domain else alt.Scale()




# a legend below the plot, one entry per line, labels cut (with "…", full in the tooltip) at the plot's width: beside
# the plot it took two thirds of a half-width chart, and entries side by side or a fixed label limit ran past the
# chart's right edge at 800 px
_BELOW = alt.Legend(orient="bottom", direction="vertical", labelLimit=alt.ExprRef("max(80, width - 24)"))


def _with_legend(plot_height: int, entries: int) -> int:
    """A chart's height with room for a _BELOW legend of `entries` lines: the page fits the whole chart (legend
    included) into the height, so a fixed one squeezed the plot and still let a long legend run out at the bottom."""
    return plot_height + 24 + 17 * entries


def curve_chart(df: pd.DataFrame, title: str, y_title: str) -> alt.LayerChart:
    """Learning curve (recsys.compare.learning_curves): a line per run over epochs; the best epoch is a large
    diamond."""
    df = _frame(df, ["run", "epoch", "value", "best"])
    base = alt.Chart(df).encode(x=alt.X("epoch:Q", title="epoch", axis=alt.Axis(tickMinStep=1)),
                                y=alt.Y("value:Q", title=y_title, scale=alt.Scale(zero=False)),
                                color=alt.Color("run:N", title="run",
                                                scale=model_colour_scale(sorted(df["run"].unique())),
                                                legend=_BELOW),
                                tooltip=["run:N", "epoch:Q", alt.Tooltip("value:Q", format=".4f"), "best:N"])
    lines = base.mark_line(point=True)
    best = base.transform_filter("datum.best").mark_point(shape="diamond", size=220, filled=True, opacity=0.9)
    return (lines + best).properties(title=title, height=_with_legend(300, df["run"].nunique()))


def seed_band_chart(df: pd.DataFrame, title: str, y_title: str) -> alt.LayerChart:
    """Learning curves pooled over seeds (recsys.compare.seed_band): the mean over seeds as a line, the band from
    the lowest to the highest seed, one colour per configuration; the tooltip says how many seeds reached the epoch."""
    df = _frame(df, ["configuration", "epoch", "mean", "low", "high", "n"])
    base = alt.Chart(df).encode(x=alt.X("epoch:Q", title="epoch", axis=alt.Axis(tickMinStep=1)),
                                color=alt.Color("configuration:N", title="configuration",
                                                scale=model_colour_scale(sorted(df["configuration"].unique())),
                                                # below the plot: beside it, it took two thirds of a half-width chart
                                                legend=_BELOW))
    band = base.mark_area(opacity=0.2).encode(y=alt.Y("low:Q", title=y_title, scale=alt.Scale(zero=False)),
                                              y2="high:Q")
    line = base.mark_line(point=True).encode(
        y=alt.Y("mean:Q", title=y_title, scale=alt.Scale(zero=False)),
        tooltip=["configuration:N", "epoch:Q", alt.Tooltip("mean:Q", format=".4f"),
                 alt.Tooltip("low:Q", format=".4f", title="lowest seed"),
                 alt.Tooltip("high:Q", format=".4f", title="highest seed"), alt.Tooltip("n:Q", title="seeds")])
    return (band + line).properties(title=title, height=_with_legend(300, df["configuration"].nunique()))


# one encoding per meaning: a metric is a shape and a neutral shade, never a hue (hues are models: model_colour_scale)
METRIC_MARKS = {"NDCG@10": ("circle", "#1f1f1f"), "HR@10": ("square", "#6b6b6b"), "MRR@10": ("diamond", "#a8a8a8")}


def _metric_scales(metrics) -> tuple[alt.Scale, alt.Scale]:
    names = list(METRIC_MARKS) + sorted(m for m in set(metrics) if m not in METRIC_MARKS)
    shapes = [METRIC_MARKS.get(m, ("triangle", "#4d4d4d"))[0] for m in names]
    shades = [METRIC_MARKS.get(m, ("triangle", "#4d4d4d"))[1] for m in names]
    return alt.Scale(domain=names, range=shades), alt.Scale(domain=names, range=shapes)


def difference_chart(df: pd.DataFrame, title: str) -> alt.LayerChart:
    """Paired differences with their intervals (recsys.compare.answer.differences_frame): one row per comparison
    and metric, a point at the difference, a bar from the interval's low to high end, a dashed rule at 0. The same
    metric has the same shape and shade on every chart; rows that hold several metrics put them side by side."""
    df = _frame(df, ["row", "metric", "diff", "ci_low", "ci_high", "text"])
    y = alt.Y("row:N", title=None, sort=None, axis=alt.Axis(labelLimit=420))
    colour, shape = _metric_scales(df["metric"])
    enc: dict = {"y": y, "color": alt.Color("metric:N", title="metric", scale=colour,
                                            legend=_BELOW),
                 "tooltip": [alt.Tooltip("text:N", title="paired bootstrap")]}
    side_by_side = bool(len(df)) and df.groupby("row")["metric"].nunique().max() > 1
    if side_by_side:  # else each row's line sits on its label
        enc["yOffset"] = alt.YOffset("metric:N", sort=[m for m in colour.domain if m in set(df["metric"])])
    base = alt.Chart(df).encode(**enc)
    bars = base.mark_rule(strokeWidth=4).encode(x=alt.X("ci_low:Q", title="A − B, 95% interval"),
                                               x2="ci_high:Q")
    points = base.mark_point(filled=True, size=90, opacity=1).encode(
        x="diff:Q", shape=alt.Shape("metric:N", scale=shape, legend=None))
    zero = alt.Chart(df).mark_rule(strokeDash=[4, 4], color="gray").encode(x=alt.datum(0))
    # a step per line: 14 px per metric when a row holds several, 28 px per row otherwise (labels never hidden)
    return (bars + points + zero).properties(title=title, height=alt.Step(14 if side_by_side else 28))


def difference_histogram(differences, title: str) -> alt.LayerChart:
    """Histogram of per-user differences A - B with a rule at 0 (users right of it: A better for them)."""
    df = pd.DataFrame({"difference": np.asarray(differences, dtype=float)})
    bars = alt.Chart(df).mark_bar().encode(
        x=alt.X("difference:Q", bin=alt.Bin(maxbins=40), title="per-user difference A − B"),
        y=alt.Y("count():Q", title="users"))
    zero = alt.Chart(pd.DataFrame({"x": [0.0]})).mark_rule(color="black", strokeDash=[4, 3]).encode(x="x:Q")
    return (bars + zero).properties(title=title, height=220)


def bucket_difference_chart(df: pd.DataFrame, count: str = "users") -> alt.LayerChart:
    """A paired difference per bucket (recsys.compare.ablations.regime_breakdown: bucket, diff, ci_low, ci_high and
    a count column): a point at the difference, a bar over its 95% interval, the count above, a dashed rule at 0."""
    df = _frame(df, ["bucket", "diff", "ci_low", "ci_high", count])
    order = [str(b) for b in (df["bucket"].cat.categories if isinstance(df["bucket"].dtype, pd.CategoricalDtype)
                              else dict.fromkeys(df["bucket"]))]
    data = df.assign(bucket=df["bucket"].astype(str)).dropna(subset=["diff"])
    x = alt.X("bucket:N", sort=order, title=None, axis=alt.Axis(labelAngle=0))
    base = alt.Chart(data).encode(x=x, tooltip=["bucket:N", alt.Tooltip("diff:Q", format="+.4f"),
                                                 alt.Tooltip("ci_low:Q", format="+.4f"),
                                                 alt.Tooltip("ci_high:Q", format="+.4f"), f"{count}:Q"])
    bars = base.mark_rule(strokeWidth=4).encode(y=alt.Y("ci_low:Q", title="difference with its 95% interval"),
                                                y2="ci_high:Q")
    points = base.mark_point(filled=True, size=90, opacity=1).encode(y="diff:Q")
    labels = base.mark_text(dy=-12).encode(y="ci_high:Q", text=alt.Text(f"{count}:Q", format=","))
    zero = alt.Chart(data).mark_rule(strokeDash=[4, 4], color="gray").encode(y=alt.datum(0))
    return (bars + points + labels + zero).properties(title=f"Difference by bucket (n = {count} above each bar)",
                                                      height=320)


def overlap_chart(sweep: pd.DataFrame, title: str | None = "Does the gap change the list?") -> alt.LayerChart:
    """recsys.inference.gap_sweep: movies shared with the first gap's top 10, per what-if gap (in the given order).
    It does not mark the chosen gap, so moving the what-if slider leaves the chart as it is (no re-render)."""
    df = _frame(sweep, ["gap", "shared with the first"])
    order = list(df["gap"])
    base = alt.Chart(df).encode(x=alt.X("gap:N", sort=order, title="gap before the next rating",
                                        axis=alt.Axis(labelAngle=-45)),
                                y=alt.Y("shared with the first:Q", scale=alt.Scale(domain=[0, 10]),
                                        title="top-10 movies shared with the 0 s list"),
                                tooltip=["gap:N", "shared with the first:Q"])
    chart = (base.mark_line(color="#4c78a8") + base.mark_point(filled=True, size=70, color="#4c78a8")).properties(
        height=300)
    # title=None: the page writes the title above the chart (in a half-width column vega cut it off at the top)
    return chart.properties(title=title) if title else chart


def retention_curve_chart(curve: pd.DataFrame, title: str | None = "S5 retention against the gap") -> alt.Chart:
    """recsys.inference.retention_curve: S5 retention per layer against the gap (log scale)."""
    df = _frame(curve, ["seconds", "layer", "retention"])
    chart = alt.Chart(df).mark_line().encode(
        x=alt.X("seconds:Q", scale=alt.Scale(type="log"), title="gap (seconds, log scale)",
                axis=alt.Axis(values=[1, 60, 3600, 86400, 2592000, 31536000], grid=False,
                              labelExpr="{'1': '1 s', '60': '1 min', '3600': '1 h', '86400': '1 d', '2592000': "
                                        "'30 d', '31536000': '1 y'}[datum.value] || datum.label", labelAngle=-45)),
        y=alt.Y("retention:Q", scale=alt.Scale(domain=[0, 1]), title="share of the state kept"),
        color=alt.Color("layer:N", legend=alt.Legend(orient="bottom")),
        tooltip=[alt.Tooltip("seconds:Q", format=",.0f"), "layer:N", alt.Tooltip("retention:Q", format=".3f")],
    ).properties(height=300)
    return chart.properties(title=title) if title else chart


def breakdown_chart(df: pd.DataFrame, y_title: str, x_title: str) -> alt.LayerChart:
    """Breakdown (recsys.compare.breakdown): grouped bars, one per run in each bucket, with the number of users/rows
    on top of each bar. Buckets keep their categorical order."""
    df = _frame(df, ["run", "bucket", "value", "count"])
    order = list(df["bucket"].cat.categories) if isinstance(df["bucket"].dtype, pd.CategoricalDtype) \
        else list(dict.fromkeys(df["bucket"]))
    data = df.assign(bucket=df["bucket"].astype(str)).dropna(subset=["value"])
    base = alt.Chart(data).encode(
        x=alt.X("bucket:N", sort=[str(o) for o in order], title=x_title, axis=alt.Axis(labelAngle=0)),
        xOffset=alt.XOffset("run:N"),
        y=alt.Y("value:Q", title=y_title),
        color=alt.Color("run:N", title="configuration", scale=model_colour_scale(sorted(data["run"].unique())),
                        legend=_BELOW),
        tooltip=["run:N", "bucket:N", alt.Tooltip("value:Q", format=".4f"), alt.Tooltip("count:Q", title="n")])
    bars = base.mark_bar()
    layers = [bars]
    if "ci_low" in data and "ci_high" in data:  # the bucket's 95% bootstrap interval, and its n above it
        ci = data.dropna(subset=["ci_low", "ci_high"])
        # rules and labels sit at the middle of their bar (bandPosition 0.5 of the run's offset band; without it
        # they sat at the band's left edge, half a bar off); counts turned upright-to-vertical so neighbours
        # never collide
        err = alt.Chart(ci).mark_rule(color="black", strokeWidth=1.5).encode(
            x=alt.X("bucket:N", sort=[str(o) for o in order]), xOffset=alt.XOffset("run:N", bandPosition=0.5),
            y="ci_low:Q", y2="ci_high:Q")
        text = alt.Chart(ci).mark_text(angle=270, align="left", dx=4, fontSize=9).encode(
            x=alt.X("bucket:N", sort=[str(o) for o in order]), xOffset=alt.XOffset("run:N", bandPosition=0.5),
            y="ci_high:Q", text=alt.Text("count:Q"))
        layers += [err, text]
    else:
        layers.append(base.mark_text(dy=-6, fontSize=10).encode(text=alt.Text("count:Q")))
    # alt.layer gives a FacetChart only for layers that all share a facet encoding; these have none
    return cast(alt.LayerChart, alt.layer(*layers)).properties(height=_with_legend(420, data["run"].nunique()))


# ------------------------------------------------------------------------------------------------ State trajectories


def state_path_chart(path: pd.DataFrame, step: int, layer: int) -> alt.LayerChart:
    """The hidden state's path in 2-D (columns pc1, pc2, step, title, gap), coloured by step, the current step
    circled in red."""
    path = _frame(path, ["pc1", "pc2", "step", "title", "gap"])
    base = alt.Chart(path).encode(x=alt.X("pc1:Q", title="PC 1"), y=alt.Y("pc2:Q", title="PC 2"),
                                  tooltip=["step:Q", "title:N", "gap:N"])
    chart = (base.mark_line(color="#bbb", order=True).encode(order="step:Q")
             + base.mark_circle(size=40).encode(color=alt.Color("step:Q", scale=alt.Scale(scheme="viridis")))
             + alt.Chart(path[path["step"] == step]).mark_point(size=250, color="red", filled=False,
                                                                strokeWidth=3).encode(x="pc1:Q", y="pc2:Q"))
    return chart.properties(title=f"Hidden-state path (2-D PCA, layer {layer})", height=330)


def contribution_chart(df: pd.DataFrame, title: str | None) -> alt.Chart:
    """Leave-one-out contributions to one target's score (recsys.inference.contributions): a horizontal bar per fed
    movie, named by its step and title, in history order; right of 0 = the movie raised the score, left = lowered
    it. (Vertical bars with angled title labels left the plot a sliver tall.)"""
    df = _frame(df, ["step", "title", "contribution"])
    df = df.assign(movie=[f"{int(s)}. {t if len(str(t)) <= 24 else str(t)[:23] + '…'}"
                          for s, t in zip(df["step"], df["title"])])
    chart = alt.Chart(df).mark_bar().encode(
        y=alt.Y("movie:N", sort=alt.EncodingSortField("step"), title="step of the history: the movie fed there",
                axis=alt.Axis(labelLimit=200)),
        x=alt.X("contribution:Q", title="score with it − without it"),
        color=alt.condition("datum.contribution >= 0", alt.value("#2e7d32"), alt.value("#c62828")),
        tooltip=["step:O", "title:N", alt.Tooltip("contribution:Q", format="+.3f")],
    ).properties(height=alt.Step(17))  # room for every label (12 px hid every other one)
    return chart.properties(title=title) if title else chart


def retention_chart(ret: pd.DataFrame, step: int) -> alt.Chart:
    """S5 retention per step (columns step, retention, gap), the current step in red."""
    ret = _frame(ret, ["step", "retention", "gap"])
    bars = alt.Chart(ret).mark_bar().encode(
        x=alt.X("step:O", axis=alt.Axis(labelOverlap=True)),
        y=alt.Y("retention:Q", scale=alt.Scale(domain=[0, 1])),
        color=alt.condition(alt.datum.step == step, alt.value("red"), alt.value("#4c78a8")),
        tooltip=["step:O", "gap:N", alt.Tooltip("retention:Q", format=".3f")])
    return bars.properties(title="S5 retention implied by each gap (mean over layers)", height=330)


def genre_affinity_chart(aff: pd.DataFrame, step: int | None = None) -> alt.LayerChart | alt.Chart:
    """Share of each genre among the predicted top-10 at each step (recsys.inference.genre_affinity), as a heatmap:
    a row per genre, a column per step (readable at 200 steps, where lines would tangle)."""
    aff = _frame(aff, ["step", "genre", "share"])
    heat = alt.Chart(aff).mark_rect().encode(
        x=alt.X("step:O", title="step", axis=alt.Axis(labelOverlap=True)),
        y=alt.Y("genre:N", title=None),
        color=alt.Color("share:Q", title="share of the top-10", scale=alt.Scale(domain=[0, 1], scheme="blues")),
        tooltip=["step:Q", "genre:N", alt.Tooltip("share:Q", format=".0%")])
    title = "Genre affinity over time: genres among the predicted top-10 at each step"
    if step is None or aff.empty:
        return heat.properties(title=title, height=alt.Step(22))
    # the step shown above the chart, outlined in its column
    mark = alt.Chart(aff[aff["step"] == step]).mark_rect(fill=None, stroke="#d62728", strokeWidth=2).encode(
        x=alt.X("step:O"), y=alt.Y("genre:N"))
    return (heat + mark).properties(title=title + " (outlined: the step shown)", height=alt.Step(22))


# ------------------------------------------------------------------------------------------------ Explore MovieLens


def rating_distribution_chart(df: pd.DataFrame, name: str) -> alt.Chart:
    """Bars of recsys.explore.rating_distribution (rating, ratings, share)."""
    df = _frame(df, ["rating", "ratings", "share"])
    return alt.Chart(df).mark_bar().encode(
        x=alt.X("rating:O", title="rating"), y=alt.Y("ratings:Q", title="number of ratings"),
        tooltip=["rating:O", alt.Tooltip("ratings:Q", format=","), alt.Tooltip("share:Q", format=".1%")],
    ).properties(title=f"{name}: rating distribution")


def ratings_per_month_chart(df: pd.DataFrame, name: str) -> alt.Chart:
    """Bars of recsys.explore.ratings_per_month (month, ratings)."""
    df = _frame(df, ["month", "ratings"])
    if "partial" not in df:
        df = df.assign(partial=False)
    df = df.assign(month_kind=["partial month" if p else "whole month" for p in df["partial"]],
                   label=pd.to_datetime(df["month"]).dt.strftime("%b %Y") if len(df) else pd.Series(dtype=str))
    return alt.Chart(df).mark_bar().encode(
        x=alt.X("label:O", title="month (UTC)", sort=None, axis=alt.Axis(labelAngle=-40, labelOverlap=True)),
        y=alt.Y("ratings:Q", title="number of ratings"),
        # stacked: side by side the two entries ran past a half-width chart's right edge at 800 px
        color=alt.Color("month_kind:N", title=None, legend=alt.Legend(orient="bottom", direction="vertical"),
                        scale=alt.Scale(domain=["whole month", "partial month"], range=["#4c78a8", "#b8c9dc"])),
        tooltip=[alt.Tooltip("label:N", title="month"), alt.Tooltip("ratings:Q", format=","),
                 alt.Tooltip("month_kind:N", title="kind")],
    ).properties(title=f"{name}: ratings per month")


def long_tail_chart(df: pd.DataFrame, name: str, who: str) -> alt.Chart:
    """Rank plot on log-log axes of recsys.explore.long_tail (rank, ratings, cum_share); `who` names the axis of
    the tail, e.g. "user activity" or "movie popularity"."""
    df = _frame(df, ["rank", "ratings", "cum_share"])

    def decades(column: str) -> alt.Axis:
        # ticks at powers of ten only: Vega's own log ticks (1, 2, 3, 10, 20, 30, ...) crowded a half-width chart
        # and put the axis title on top of its labels at 800 px
        top = float(df[column].max()) if len(df) else 1.0
        return alt.Axis(values=[10 ** k for k in range(int(np.floor(np.log10(max(top, 1.0)))) + 2)],
                        format="~s", labelFlush=True)

    return alt.Chart(df).mark_line(point=alt.OverlayMarkDef(size=12)).encode(
        x=alt.X("rank:Q", scale=alt.Scale(type="log"), title="rank (log)", axis=decades("rank")),
        y=alt.Y("ratings:Q", scale=alt.Scale(type="log"), title="ratings (log)", axis=decades("ratings")),
        tooltip=[alt.Tooltip("rank:Q", format=","), alt.Tooltip("ratings:Q", format=","),
                 alt.Tooltip("cum_share:Q", format=".1%", title="share of ratings up to this rank")],
    ).properties(title=f"{name}: {who} (rank plot)")


def genre_shares_chart(df: pd.DataFrame, name: str, period: str, genres: Sequence[str]) -> alt.Chart:
    """Lines of recsys.explore.genre_shares_over_time (period, genre, share, ratings, total) per `period` ("year"
    or "month"), genres coloured in the given order."""
    df = _frame(df, ["period", "genre", "ratings", "total", "share"])
    x = (alt.X("period:O", title="year of the rating") if period == "year"
         else alt.X("period:T", title="month of the rating (UTC)"))
    return alt.Chart(df).mark_line(point=True).encode(
        x=x, y=alt.Y("share:Q", title="share of that period's ratings", axis=alt.Axis(format="%")),
        color=alt.Color("genre:N", sort=list(genres)),
        tooltip=[alt.Tooltip("period:" + ("O" if period == "year" else "T")), "genre:N",
                 alt.Tooltip("share:Q", format=".1%"), alt.Tooltip("ratings:Q", format=","),
                 alt.Tooltip("total:Q", format=",", title="all ratings")],
    ).properties(title=f"{name}: share of ratings per genre per {period}")


def gap_histogram_chart(hist: pd.DataFrame, name: str, references: pd.DataFrame | None = None) -> alt.LayerChart:
    """Log-binned histogram of recsys.explore.gap_histogram (bin_lo, bin_hi, gaps, share, range), with dashed
    reference lines at `references` (label, seconds; e.g. recsys.explore.GAP_REFERENCES)."""
    hist = _frame(hist, ["bin_lo", "bin_hi", "gaps", "share", "range"])
    bars = alt.Chart(hist).mark_bar(stroke="white", strokeWidth=0.5).encode(
        x=alt.X("bin_lo:Q", scale=alt.Scale(type="log"), title="gap to the next rating (seconds, log scale)"),
        x2="bin_hi:Q",
        y=alt.Y("share:Q", title="share of all gaps", axis=alt.Axis(format="%")),
        y2=alt.datum(0),  # with x and x2 both set, a bar needs its baseline spelled out or it has no height
        tooltip=[alt.Tooltip("range:N", title="gap"), alt.Tooltip("gaps:Q", format=","),
                 alt.Tooltip("share:Q", format=".2%")])
    refs = _frame(references, ["label", "seconds"])
    rules = alt.Chart(refs).mark_rule(color="firebrick", strokeDash=[4, 3]).encode(x="seconds:Q", tooltip=["label:N"])
    labels = alt.Chart(refs).mark_text(align="left", dx=3, dy=-5, color="firebrick", baseline="top").encode(
        x="seconds:Q", y=alt.value(0), text="label:N")
    return cast(alt.LayerChart, alt.layer(bars, rules, labels)).properties(  # no facets: a LayerChart
        title=f"{name}: gaps between consecutive ratings of a user (zero gaps excluded)")


def user_timeline_chart(timeline: pd.DataFrame, name: str, user: int) -> alt.Chart:
    """One user's ratings over time (recsys.explore.user_timeline rows that have a time)."""
    timeline = _frame(timeline, ["time", "rating", "title", "gap"])
    return alt.Chart(timeline).mark_circle(size=50, opacity=0.6).encode(
        x=alt.X("time:T", title="date (UTC)",  # 24-hour times, as the table beside it (never "03 PM")
                axis=alt.Axis(format="%Y-%m-%d %H:%M", labelAngle=-30, labelOverlap=True)),
        y=alt.Y("rating:Q", title="rating", scale=alt.Scale(zero=False)),
        tooltip=["title:N", "rating:Q", alt.Tooltip("time:T", format="%Y-%m-%d %H:%M:%S"),
                 alt.Tooltip("gap:N", title="gap since previous")],
    ).properties(title=f"{name}: ratings of user {int(user)} over time")
