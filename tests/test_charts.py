"""recsys.charts: every builder returns a chart (that serialises to a Vega-Lite spec) for a tiny frame and for an
empty one, without Streamlit."""
from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd
import pytest

from recsys import catalogue, charts
from recsys import compare as C
from recsys.explore import GAP_REFERENCES

TINY = {
    "curve_chart": (lambda df: charts.curve_chart(df, "VALIDATION NDCG@10", "ndcg"),
                    pd.DataFrame({"run": ["A", "A", "B"], "epoch": [1, 2, 1], "value": [0.1, 0.2, 0.15],
                                  "best": [False, True, True]})),
    "breakdown_chart": (lambda df: charts.breakdown_chart(df, "NDCG@10", "activity"),
                        pd.DataFrame({"run": ["A", "B"], "bucket": C.activity_buckets([4, 300]),
                                      "value": [0.5, np.nan], "count": [1, 0]})),
    "state_path_chart": (lambda df: charts.state_path_chart(df, step=2, layer=1),
                         pd.DataFrame({"pc1": [0.0, 1.0], "pc2": [0.5, -0.5], "step": [1, 2], "title": ["a", "b"],
                                       "gap": ["1 d", "2 h"]})),
    "retention_chart": (lambda df: charts.retention_chart(df, step=1),
                        pd.DataFrame({"step": [1, 2], "retention": [0.9, 0.2], "gap": ["1 min", "3 mo"]})),
    "genre_affinity_chart": (charts.genre_affinity_chart,
                             pd.DataFrame({"step": [1, 1, 2], "genre": ["Drama", "Comedy", "Drama"],
                                           "share": [0.5, 0.3, 0.7]})),
    "contribution_chart": (lambda df: charts.contribution_chart(df, "score of x"),
                           pd.DataFrame({"step": [1, 2], "title": ["a", "b"], "contribution": [0.4, -0.1]})),
    "difference_chart": (lambda df: charts.difference_chart(df, "SS4Rec minus"),
                         pd.DataFrame({"row": ["A · NDCG@10"], "metric": ["NDCG@10"], "diff": [0.01],
                                       "ci_low": [-0.01], "ci_high": [0.03], "text": ["x"]})),
    "rating_distribution_chart": (lambda df: charts.rating_distribution_chart(df, "ml-100k"),
                                  pd.DataFrame({"rating": [1.0, 5.0], "ratings": [3, 7], "share": [0.3, 0.7]})),
    "ratings_per_month_chart": (lambda df: charts.ratings_per_month_chart(df, "ml-100k"),
                                pd.DataFrame({"month": pd.to_datetime(["1997-09-01", "1997-10-01"]),
                                              "ratings": [10, 0]})),
    "long_tail_chart": (lambda df: charts.long_tail_chart(df, "ml-100k", "user activity"),
                        pd.DataFrame({"rank": [1, 2, 3], "ratings": [9, 3, 1], "cum_share": [9 / 13, 12 / 13, 1.0]})),
    "genre_shares_chart (year)": (lambda df: charts.genre_shares_chart(df, "ml-100k", "year", ["Drama"]),
                                  pd.DataFrame({"period": [1997, 1998], "genre": ["Drama", "Drama"], "ratings": [2, 3],
                                                "total": [4, 4], "share": [0.5, 0.75]})),
    "genre_shares_chart (month)": (lambda df: charts.genre_shares_chart(df, "ml-100k", "month", ["Drama"]),
                                   pd.DataFrame({"period": pd.to_datetime(["1997-09-01"]), "genre": ["Drama"],
                                                 "ratings": [2], "total": [4], "share": [0.5]})),
    "gap_histogram_chart": (lambda df: charts.gap_histogram_chart(df, "ml-100k", GAP_REFERENCES),
                            pd.DataFrame({"bin_lo": [1.0, 10.0], "bin_hi": [10.0, 100.0], "gaps": [3, 1],
                                          "share": [0.6, 0.2], "range": ["1 s – 10 s", "10 s – 1.7 min"]})),
    "user_timeline_chart": (lambda df: charts.user_timeline_chart(df, "ml-100k", 5),
                            pd.DataFrame({"time": pd.to_datetime(["1997-09-20", "1997-09-21"]), "rating": [4.0, 2.0],
                                          "title": ["a", "b"], "gap": ["—", "1 d"]})),
}


@pytest.mark.parametrize("name", list(TINY))
def test_builder_returns_a_chart_for_a_tiny_frame_and_an_empty_one(name):
    build, tiny = TINY[name]
    for df in (tiny, tiny.iloc[0:0], pd.DataFrame()):
        chart = build(df)
        assert isinstance(chart, alt.TopLevelMixin), name
        spec = chart.to_dict()
        assert spec["$schema"].startswith("https://vega.github.io/schema/vega-lite/"), name


def test_titles_and_data_reach_the_spec():
    build, tiny = TINY["user_timeline_chart"]
    spec = build(tiny).to_dict()
    assert spec["title"] == "ml-100k: ratings of user 5 over time"
    assert len(next(iter(spec["datasets"].values()))) == 2
    assert spec["encoding"]["x"]["axis"]["format"] == "%Y-%m-%d %H:%M"  # 24-hour, as Explore's table (no AM/PM)
    # the best epoch is drawn as its own layer, the run's points as another
    curve = TINY["curve_chart"][0](TINY["curve_chart"][1]).to_dict()
    assert curve["title"] == "VALIDATION NDCG@10" and len(curve["layer"]) == 2
    # breakdown buckets keep their categorical order, empty buckets included in the axis
    bars = TINY["breakdown_chart"][0](TINY["breakdown_chart"][1]).to_dict()
    assert bars["layer"][0]["encoding"]["x"]["sort"] == list(C.ACTIVITY_LABELS)


def test_one_colour_per_model_with_lighter_shades_for_its_other_runs():
    scale = charts.model_colour_scale(["SS4Rec [seed0]", "SS4Rec [seed1]", "SASRec · len50", "Popular (floor)",
                                       "Something else"]).to_dict()
    assert scale["range"][0] == catalogue.colours()["SS4Rec"] and scale["range"][1] != scale["range"][0]
    assert scale["range"][2] == catalogue.colours()["SASRec"] and scale["range"][3] == catalogue.colours()["Popular"]
    assert scale["range"][4] == charts.OTHER_COLOURS[0]
    # three runs of one model are told apart: shades at least 60 apart in summed RGB from each other
    three = charts.model_colour_scale(["SS4Rec a", "SS4Rec b", "SS4Rec c"]).to_dict()["range"]
    rgb = [[int(c[i:i + 2], 16) for i in (1, 3, 5)] for c in three]
    assert all(sum(abs(x - y) for x, y in zip(rgb[i], rgb[j])) >= 60 for i in range(3) for j in range(i + 1, 3))
    # the same model keeps its colour in every chart that draws it
    curve = charts.curve_chart(pd.DataFrame({"run": ["SS4Rec", "NCF"], "epoch": [1, 1], "value": [0.1, 0.2],
                                             "best": [True, True]}), "t", "y").to_dict()
    colour = curve["layer"][0]["encoding"]["color"]["scale"]
    assert dict(zip(colour["domain"], colour["range"]))["SS4Rec"] == catalogue.colours()["SS4Rec"]


def test_a_metric_looks_the_same_on_every_difference_chart_and_rows_sit_on_their_labels():
    one = pd.DataFrame({"row": ["GRU4Rec · NDCG@10", "Markov · NDCG@10"], "metric": ["NDCG@10", "NDCG@10"],
                        "diff": [0.1, 0.2], "ci_low": [0.0, 0.1], "ci_high": [0.2, 0.3], "text": ["a", "b"]})
    three = pd.DataFrame({"row": ["v"] * 3, "metric": ["HR@10", "MRR@10", "NDCG@10"], "diff": [0.1] * 3,
                          "ci_low": [0.0] * 3, "ci_high": [0.2] * 3, "text": ["a"] * 3})
    specs = [charts.difference_chart(d, "t").to_dict() for d in (one, three)]
    for spec in specs:  # NDCG@10 is the same near-black on both (not a model's hue), whatever else is drawn
        scale = spec["layer"][0]["encoding"]["color"]["scale"]
        assert scale["range"][scale["domain"].index("NDCG@10")] == charts.METRIC_MARKS["NDCG@10"][1]
    assert "yOffset" not in specs[0]["layer"][0]["encoding"]  # one metric per row: the line sits on its label
    assert "yOffset" in specs[1]["layer"][0]["encoding"]


def test_why_bars_name_their_movie_and_the_heatmap_marks_the_step_shown():
    rows = pd.DataFrame({"step": [1, 2], "title": ["Star Wars (1977)", "A Very Long Title Indeed For A Bar (1999)"],
                         "contribution": [0.5, -0.2]})
    spec = charts.contribution_chart(rows, None).to_dict()
    labels = [r["movie"] for r in next(iter(spec["datasets"].values()))]
    assert labels == ["1. Star Wars (1977)", "2. A Very Long Title Indee…"] and "title" not in spec
    aff = pd.DataFrame({"step": [1, 1, 2, 2], "genre": ["Drama", "Comedy"] * 2, "share": [0.5, 0.2, 0.4, 0.1]})
    marked = charts.genre_affinity_chart(aff, 2).to_dict()
    assert len(marked["layer"]) == 2 and "outlined" in marked["title"]
    assert "layer" not in charts.genre_affinity_chart(aff).to_dict()
