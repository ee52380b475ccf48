"""Dashboard pages render without exceptions, on the embedded data and on bad input, share one sidebar, and stay
free of torch and run-directory internals (AppTest, no browser)."""
from __future__ import annotations

import re

import pytest
from streamlit.testing.v1 import AppTest

from recsys import compare as C
from recsys.app import state
from tests.conftest import ROOT


def run_app():
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=60)
    return at.run()


def run_explore():
    return run_app().switch_page("app_pages/explore.py").run()


def test_explore_renders_embedded_headline_numbers():
    at = run_explore()
    assert not at.exception
    values = {m.label: m.value for m in at.metric}
    assert values["Ratings"] == "100,000" and values["Users"] == "943" and values["Movies rated"] == "1,682"


def test_explore_bad_folder_shows_clear_error(tmp_path):
    at = run_explore()
    at.radio[0].set_value("A folder on this machine").run()
    assert not at.exception and at.info  # asks for a path first
    at.text_input[0].set_value(str(tmp_path / "missing")).run()
    assert not at.exception
    assert any("does not exist" in e.value for e in at.error)
    (tmp_path / "empty").mkdir()
    at.text_input[0].set_value(str(tmp_path / "empty")).run()
    assert any("no MovieLens ratings file" in e.value for e in at.error)


def test_pages_import_neither_torch_nor_the_run_directory_internals():
    """Pages only lay out widgets: models come through recsys.inference, runs through recsys.compare / recsys.app."""
    pages = sorted((ROOT / "app_pages").glob("*.py"))
    assert len(pages) == 6
    for page in pages:
        text = page.read_text()
        assert not re.search(r"^\s*(import\s+torch|from\s+torch[\s.])", text, re.M), f"{page.name} imports torch"
        assert not re.search(r"recsys\.runs\b|from\s+recsys\s+import\s+.*\bruns\b", text), \
            f"{page.name} reaches into the run directory (recsys.runs)"


def test_sidebar_is_drawn_once_and_shared_by_every_page(tmp_path):
    at = run_explore()
    assert [t.key for t in at.sidebar.text_input] == [state.RUNS_FOLDER, state.USER]
    assert not [t for t in at.main.text_input if t.key in (state.RUNS_FOLDER, state.USER)]
    at.text_input(key=state.RUNS_FOLDER).set_value(str(tmp_path)).run()  # typed once, on Explore
    for page, message in (("app_pages/compare.py", "No runs found"),
                          ("app_pages/trajectories.py", "No complete SS4Rec run"),
                          ("app_pages/live.py", "No complete SS4Rec run")):
        at.switch_page(page).run()
        assert not at.exception, page
        assert [t.key for t in at.sidebar.text_input] == [state.RUNS_FOLDER, state.USER], page  # once, in the sidebar
        assert at.text_input(key=state.RUNS_FOLDER).value == str(tmp_path), page  # kept across page switches
        assert any(message in i.value and str(tmp_path) in i.value for i in at.info), page


def test_user_picker_says_when_the_id_is_not_a_user_of_the_run():
    at = run_explore()
    if not any(box.key == state.SS4REC_RUN for box in at.selectbox):
        pytest.skip("no SS4Rec run in checkpoints/")
    at.text_input(key=state.USER).set_value("99999").run()
    assert not at.exception
    assert any("User 99999 is not one of the 943 users" in w.value for w in at.sidebar.warning)
    assert at.text_input(key=state.USER).value == "99999"  # shown as typed, not silently replaced


@pytest.mark.parametrize("typed, problem", [("abc", "“abc” is not a user id"), ("12.7", "“12.7” is not a user id"),
                                             ("", "No user id typed"), ("1 2", "“1 2” is not a user id"),
                                             ("9" * 40, "too long to be a user id")])
def test_a_user_id_that_is_not_a_whole_number_is_said_and_kept_as_typed(typed, problem):
    """The sidebar's user box is a text box: a browser's number box dropped "abc" and rounded "12.7" to 12 without a
    word. What was typed stays in the box, the sidebar says why it is not an id, the user pages stop with the same
    message, and the address bar keeps the last id that was one."""
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=60).run()
    if not any(box.key == state.SS4REC_RUN for box in at.selectbox):
        pytest.skip("no SS4Rec run in checkpoints/")
    at.text_input(key=state.USER).set_value("7").run()
    assert at.query_params["user"] == "7"
    at.switch_page("app_pages/trajectories.py").run()
    at.text_input(key=state.USER).set_value(typed).run()
    assert not at.exception
    assert at.text_input(key=state.USER).value == typed  # kept as typed, never replaced by user 1 or 12
    assert any(problem in w.value for w in at.sidebar.warning)
    assert any(problem in w.value for w in at.main.warning)  # the page says it too, and draws no user's trajectory
    assert at.query_params["user"] == "7"
    at.text_input(key=state.USER).set_value(" 12 ").run()  # surrounding spaces are forgiven
    assert not at.exception and not at.sidebar.warning and at.query_params["user"] == "12"


def test_parse_user_id():
    assert state.parse_user_id("42") == (42, None) and state.parse_user_id(" +42 ") == (42, None)
    assert state.parse_user_id("-3") == (-3, None)  # a number, then judged by the run: no such user
    for bad in ("abc", "12.7", "", None, "1e3", "4 2", "--3", "٣"):
        uid, why = state.parse_user_id(bad)
        assert uid is None and why, bad


def test_the_view_lives_in_the_url_and_a_link_reproduces_it(tmp_path):
    """Query parameters set the shared choices on a session's first run (a reload, a shared link) and every run
    writes the current ones back; a link's value the page cannot show is said, not silently replaced."""
    first = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=120).run()
    boxes = [b for b in first.sidebar.selectbox if b.key == state.SS4REC_RUN]
    if not boxes or len(boxes[0].options) < 2:
        pytest.skip("needs two SS4Rec runs in checkpoints/")
    labels = [r.label for r in state.candidates("ss4rec", C.scan_runs(ROOT / "checkpoints"))]
    run = labels[1]
    assert first.query_params["runs"] == "checkpoints" and first.query_params["run"] == labels[0]
    # the box shows what tells runs apart (model, variant, seed, data); the address bar keeps the folder name
    assert boxes[0].options[0].startswith("SS4Rec · ") and " · seed " in boxes[0].options[0]
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=120)
    at.query_params.update({"run": run, "user": "42", "interval": "users"})
    at.run()
    assert not at.exception
    assert at.selectbox(key=state.SS4REC_RUN).value == run and at.text_input(key=state.USER).value == "42"
    assert any("Intervals shown: **users**" in c.value for c in at.caption)
    assert at.query_params["user"] == "42" and at.query_params["run"] == run
    at.text_input(key=state.USER).set_value("7").run()
    assert at.query_params["user"] == "7"  # the address bar follows the view
    bad = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=120)
    bad.query_params.update({"run": "no-such-run", "user": "abc"})
    bad.run()
    assert not bad.exception
    warnings = " ".join(w.value for w in bad.sidebar.warning)
    assert "'no-such-run' is not in this runs folder" in warnings and "'abc' is not a whole number" in warnings
    assert bad.selectbox(key=state.SS4REC_RUN).value == labels[0]


def test_a_page_run_on_its_own_uses_the_sidebar_defaults():
    at = AppTest.from_file(str(ROOT / "app_pages" / "compare.py"), default_timeout=60).run()
    assert not at.exception and at.title[0].value == "Compare runs"
    assert not at.sidebar.text_input  # no entry file, no sidebar: the defaults (checkpoints/) apply
    assert any("Dataset: ml-100k" in c.value for c in at.caption) or not C.scan_runs(ROOT / "checkpoints").runs


def test_a_chart_title_is_text_above_the_chart_so_it_wraps_instead_of_being_cut():
    """Vega cut a title longer than its chart with "…" (half-width charts at 800 px); show_chart writes it as a line
    of text above the chart, escaped, and keeps it in the spec's usermeta."""
    def page():
        import altair as alt
        import pandas as pd

        from recsys.app.common import show_chart
        frame = pd.DataFrame({"x": [1, 2], "y": [3, 4]})
        show_chart(alt.Chart(frame).mark_line().encode(x="x", y="y").properties(
            title="A long title: *not* bold, [not a link] and $x$ with a 95% interval (seeds and users)"))
        show_chart(alt.Chart(frame).mark_point().encode(x="x", y="y"))  # no title: nothing above it

    import json
    at = AppTest.from_function(page).run()
    assert not at.exception
    assert [m.value for m in at.markdown] == [
        r"**A long title: \*not\* bold, \[not a link\] and \$x\$ with a 95% interval \(seeds and users\)**"]
    specs = [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")]
    assert "title" not in specs[0] and specs[0]["usermeta"]["title"].startswith("A long title: *not*")
    assert "title" not in specs[1] and "title" not in (specs[1].get("usermeta") or {})
