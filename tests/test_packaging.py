"""The package declares what it needs (issue 22): pyproject.toml's dependencies and extras are the requirements
files' pins, every runtime dependency is imported by the package or the app, and a built wheel carries them."""
from __future__ import annotations

import re
import subprocess
import sys
import tomllib
import zipfile

from tests.conftest import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# distribution name -> the module it is imported as
IMPORT_NAME = {"PyYAML": "yaml", "prometheus-client": "prometheus_client", "scikit-learn": "sklearn",
               "s5-pytorch": "s5", "causal-conv1d": "causal_conv1d", "mamba-ssm": "mamba_ssm"}


def pins(path) -> list[str]:
    return [line.split("#")[0].strip() for line in (ROOT / path).read_text().splitlines()
            if line.split("#")[0].strip()]


def test_pyproject_declares_exactly_the_pinned_requirements():
    project = PYPROJECT["project"]
    assert sorted(project["dependencies"]) == sorted(pins("requirements.txt"))
    extras = project["optional-dependencies"]
    assert sorted(extras["dev"]) == sorted(pins("requirements-dev.txt"))
    assert sorted(extras["gpu"]) == sorted(pins("requirements-gpu.txt"))
    assert set(extras["bench"]) <= set(extras["dev"])


def test_every_runtime_dependency_is_imported_where_it_runs():
    sources = "\n".join(p.read_text() for folder in ("recsys", "app_pages") for p in (ROOT / folder).rglob("*.py"))
    sources += (ROOT / "streamlit_app.py").read_text()
    for pin in PYPROJECT["project"]["dependencies"]:
        dist = pin.split("==")[0]
        module = IMPORT_NAME.get(dist, dist.replace("-", "_"))
        assert re.search(rf"^\s*(import|from) {module}\b", sources, re.M), f"{dist} is declared but never imported"
    for dist in ("plotly", "scikit-learn", "s5-pytorch", "einops"):
        module = IMPORT_NAME.get(dist, dist)
        assert not re.search(rf"^\s*(import|from) {module}\b", sources, re.M) or \
            dist in " ".join(PYPROJECT["project"]["dependencies"]), f"{dist} is imported but not a runtime dependency"


def test_a_built_wheel_requires_its_runtime_dependencies(tmp_path):
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                          "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    (wheel,) = tmp_path.glob("*.whl")
    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        text = zf.read(meta).decode()
        names = zf.namelist()
    required = {line.split(":", 1)[1].strip() for line in text.splitlines()
                if line.startswith("Requires-Dist:") and "extra ==" not in line}
    assert required == set(PYPROJECT["project"]["dependencies"])
    assert "recsys/catalogue.py" in names  # the torch-free catalogue reads the model files' cards ...
    assert {f"recsys/models/{m}.py" for m in ("ss4rec", "sasrec", "baselines")} <= set(names)  # ... shipped beside it
    assert any(n.startswith("recsys/models/native/") and n.endswith(".c") for n in names)  # the CPU kernels' source
