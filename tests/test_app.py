"""Dashboard pages render without exceptions, on the embedded data and on bad input (AppTest, no browser)."""
from __future__ import annotations

from streamlit.testing.v1 import AppTest

from tests.conftest import ROOT


def run_app():
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=60)
    return at.run()


def test_explore_renders_embedded_headline_numbers():
    at = run_app()
    assert not at.exception
    values = {m.label: m.value for m in at.metric}
    assert values["Ratings"] == "100,000" and values["Users"] == "943" and values["Movies rated"] == "1,682"


def test_explore_bad_folder_shows_clear_error(tmp_path):
    at = run_app()
    at.radio[0].set_value("A folder on this machine").run()
    assert not at.exception and at.info  # asks for a path first
    at.text_input[0].set_value(str(tmp_path / "missing")).run()
    assert not at.exception
    assert any("does not exist" in e.value for e in at.error)
    (tmp_path / "empty").mkdir()
    at.text_input[0].set_value(str(tmp_path / "empty")).run()
    assert any("no MovieLens ratings file" in e.value for e in at.error)
