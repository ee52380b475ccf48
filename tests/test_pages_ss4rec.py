"""The State-trajectories and Live-recommendations pages, on small runs the tests train with the real code. The runs
folder, the runs and the user are chosen in the sidebar streamlit_app.py draws (recsys.app.state)."""
from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from recsys.app import state
from recsys.config import resolve_config
from recsys.training.runner import run_training
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("page-runs")
    tiny = {"hidden": 16, "d_state": 8, "s5_state": 8, "max_len": 20, "epochs": 1, "batch_size": 512,
            "cpu_threads": 1}
    run_training(resolve_config("ss4rec", {}, tiny), root / "ss4rec-tiny", ["test"], progress=False)
    run_training(resolve_config("ncf", {}, {"gmf_dim": 8, "mlp_dims": [16, 8], "epochs": 1, "cpu_threads": 1}),
                 root / "ncf-tiny", ["test"], progress=False)
    return root


def app_on(page: str, folder) -> AppTest:
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=120)
    at.run()
    at.switch_page(page)
    at.run()
    at.text_input(key=state.RUNS_FOLDER).set_value(str(folder)).run()  # the sidebar's, shared by every page
    return at


def no_exception(at):
    assert not at.exception, [e.value for e in at.exception]


def test_trajectories_page_steps_through_history(runs_dir):
    at = app_on("app_pages/trajectories.py", runs_dir)
    no_exception(at)
    assert any("Top-10 predicted next movies" in s.value for s in at.subheader)
    labels = [m.label for m in at.metric]
    assert {"Gap since previous", "Gap to next (fed to S5)", "S5 retention"} <= set(labels)
    last = at.slider[0].value
    heading = [m.value for m in at.markdown if m.value.startswith("#### Step")]
    assert heading and heading[0].startswith(f"#### Step {last} of {last}:")
    # why this prediction: a contribution chart per scored movie, the share of already-rated movies in the top-10
    assert any(s.value == "Why this prediction" for s in at.subheader)
    assert any("left out" in c.value and "did most for" in c.value for c in at.caption)
    assert any(c.value.split(" of the top ")[0].isdigit() and "already rated" in c.value for c in at.caption)
    top = next(df.value for df in at.dataframe if "already rated" in df.value)
    at.toggle[0].set_value(True).run()  # hide the movies already rated
    no_exception(at)
    shown = next(df.value for df in at.dataframe if "already rated" in df.value)
    assert (shown["already rated"] != "yes").all() and len(shown) == (top["already rated"] != "yes").sum()
    at.button[0].click().run()  # previous step
    no_exception(at)
    assert at.slider[0].value == last - 1
    assert any(m.value.startswith(f"#### Step {last - 1} of {last}:") for m in at.markdown)
    at.text_input(key=state.USER).set_value("5").run()
    no_exception(at)
    assert any(m.value.startswith("#### Step") for m in at.markdown)  # user 5's history, stepped through
    at.text_input(key=state.USER).set_value("99999").run()  # not a user of the run: said so, never kept silently
    no_exception(at)
    assert any("User 99999 is not one of the" in w.value for w in at.sidebar.warning)
    assert any("User 99999 is not one of the" in w.value for w in at.main.warning)
    assert not any(s.value.startswith("Top-10 predicted") for s in at.subheader)


def test_trajectories_page_without_runs_and_with_a_broken_run(tmp_path):
    at = app_on("app_pages/trajectories.py", tmp_path)
    no_exception(at)
    assert any("No complete SS4Rec run" in i.value for i in at.info)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "run.json").write_text("{oops")
    at.text_input(key=state.RUNS_FOLDER).set_value(str(tmp_path)).run()
    no_exception(at)
    assert any("could not be read" in e.label for e in at.expander)


def test_live_page_what_if_and_side_by_side(runs_dir):
    at = app_on("app_pages/live.py", runs_dir)
    no_exception(at)
    assert at.selectbox(key=state.SS4REC_RUN).value == "ss4rec-tiny"
    assert at.selectbox(key=state.OTHER_RUN).value == "ncf-tiny"  # side by side from the start
    no_exception(at)
    assert {"SS4Rec", "NCF"} <= {s.value for s in at.subheader}
    assert len(at.dataframe) >= 3  # history, SS4Rec list, NCF list
    assert any("score (logit)" in df.value.columns or "predicted rating" in df.value.columns
               for df in at.dataframe[2:])  # the other list's header says what its scores are
    before = at.dataframe[1].value["title"].tolist()
    assert "Where SS4Rec stops caring about time" in [s.value for s in at.subheader]
    assert not any("does not read the time" in w.value for w in at.warning)  # the released model reads it
    assert at.select_slider(key="live_gap").options[:3] == ["0 s", "5 s", "30 s"]  # second-scale steps
    at.toggle(key="live_why").set_value(True).run()  # why the top pick: one contribution per fed movie
    no_exception(at)
    assert any("did most" in c.value for c in at.caption)
    at.toggle(key="live_why").set_value(False).run()
    at.select_slider(key="live_gap").set_value("2 years").run()
    no_exception(at)
    after = at.dataframe[1].value["title"].tolist()
    assert len(after) == 10 and before != after or any("differ" in c.value for c in at.caption)
    at.radio(key="live_mode").set_value("Build my own").run()
    no_exception(at)
    assert any("Add at least one movie" in i.value for i in at.info)  # empty history explained
    from streamlit.proto.SelectWidgetFilterMode_pb2 import SelectWidgetFilterMode

    # typing a title matches it as text, not as letters in order ("star wars" once also matched Dr. Strangelove)
    assert at.multiselect(key="live_pick").proto.filter_mode == SelectWidgetFilterMode.Value("FILTER_MODE_CONTAINS")
    at.multiselect(key="live_pick").set_value([1, 2, 3]).run()
    no_exception(at)
    assert any("cannot score a history you built" in i.value for i in at.info)
    fallback = next(df.value for df in at.dataframe if "ratings" in df.value.columns)
    assert len(fallback) == 10 and fallback["ratings"].is_monotonic_decreasing  # the most-rated movies instead
    fed = next(df.value for df in at.dataframe if "gap before" in df.value.columns)
    assert fed["step"].tolist() == [1, 2, 3] and fed["gap before"].iloc[0] == "—"
    # a date far outside the data's span is warned about, and the history is fed in date order
    at.session_state["live_dates"] = {"edited_rows": {0: {"date": "2030-01-01T00:00:00"}}, "added_rows": [],
                                      "deleted_rows": []}
    at.run()
    no_exception(at)
    assert any("outside the data's span" in w.value for w in at.warning)
    fed = next(df.value for df in at.dataframe if "gap before" in df.value.columns)
    assert fed["when"].iloc[-1].startswith("2030-01-01")  # the first movie picked, fed last by its date
    at.selectbox(key=state.OTHER_RUN).set_value(state.NONE).run()
    no_exception(at)
    assert "NCF" not in {s.value for s in at.subheader} and "Beside it: none" in {s.value for s in at.subheader}


