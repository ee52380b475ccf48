"""The shape the codebase promises: one model interface, one registry and factory, defaults defined once, small
files. Each of these fails when someone wires a model in a second place or lets a module grow past its concern."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import torch

from recsys.config import ConfigError, RunConfig, TrainConfig, resolve_config
from recsys.data.batch import SequenceBatch
from recsys.models import MODELS, CatalogueSize, Recommender, build_model

ROOT = Path(__file__).resolve().parents[1]


def test_no_python_file_under_recsys_over_500_lines():
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / "recsys").rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 500}
    assert not long, long


def test_no_function_over_80_lines_in_recsys_or_the_pages():
    import ast

    long = {}
    for folder in ("recsys", "app_pages"):
        for p in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(p.read_text())):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and \
                        node.end_lineno - node.lineno + 1 > 80:
                    long[f"{p.relative_to(ROOT)}::{node.name}"] = node.end_lineno - node.lineno + 1
    assert not long, long


def test_no_test_module_imports_another():
    """Shared helpers live in tests/helpers.py or tests/conftest.py: a test file importing another runs its tests'
    module code and ties the two files together."""
    import re

    crossed = {p.name: m for p in (ROOT / "tests").glob("test_*.py")
               for m in re.findall(r"^\s*from tests\.(test_\w+) import", p.read_text(), re.M)}
    assert not crossed, crossed


def test_exactly_one_model_factory():
    """Models are constructed only through build_model: no other code calls a model class's constructor."""
    names = [cls.__name__ for cls in MODELS.values()]
    pattern = re.compile(r"\b(" + "|".join(names) + r")\(")
    offenders = []
    for p in list((ROOT / "recsys").rglob("*.py")) + list((ROOT / "scripts").rglob("*.py")) + \
            list((ROOT / "app_pages").rglob("*.py")):
        for i, line in enumerate(p.read_text().splitlines(), 1):
            code = line.split("#")[0]
            if pattern.search(code) and not re.search(r"\bclass\s", code) and "super(" not in code:
                offenders.append(f"{p.relative_to(ROOT)}:{i}: {line.strip()}")
    allowed = ("return cls(",)
    assert [o for o in offenders if not any(a in o for a in allowed)] == []


@pytest.mark.parametrize("name", list(MODELS))
def test_every_registered_model_implements_the_interface(name):
    cls = MODELS[name]
    assert issubclass(cls, Recommender) and cls.name == name
    assert dataclasses.is_dataclass(cls.Config)
    cfg = resolve_config(name, {}, {"hidden": 8, "d_state": 4, "s5_state": 4} if name == "ss4rec" else {})
    torch.manual_seed(0)
    model = build_model(cfg, CatalogueSize(n_users=5, n_items=9))
    b = SequenceBatch(users=torch.tensor([1, 2]), items=torch.tensor([[1, 2, 3], [4, 0, 0]]),
                      timestamps=torch.tensor([[10, 20, 30], [5, 0, 0]]), lengths=torch.tensor([3, 1]),
                      targets=torch.tensor([5, 6]), target_times=torch.tensor([40, 9]),
                      target_ratings=torch.tensor([4.0, 3.0]))
    if "ranking" in cls.objectives or model.has_rating:
        assert model.score(b).shape == (2, 10)
    if model.has_rating:
        assert model.predict_rating(b).shape == (2,)
    if model.trainable and not cls.reads_history:
        b.negatives = torch.tensor([[7], [8]])
        loss = model(b)
        assert loss.dim() == 0 and torch.isfinite(loss)


def test_defaults_are_defined_once_and_files_only_override():
    assert resolve_config("ss4rec", {}, {}).train.max_len == TrainConfig().max_len
    assert resolve_config("ncf", {}, {}).train.max_len == TrainConfig().max_len
    cfg = resolve_config("ss4rec", {"max_len": 200, "lr": "1e-4"}, {"max_len": 20})
    assert cfg.train.max_len == 20 and cfg.train.lr == 1e-4           # command line > file > defaults
    assert RunConfig.from_dict(cfg.as_dict()) == cfg                  # run.json round trip


def test_config_errors_are_clear():
    with pytest.raises(ConfigError, match="unknown option 'gmf_dim' for ss4rec"):
        resolve_config("ss4rec", {}, {"gmf_dim": 4})
    with pytest.raises(ConfigError, match="unknown model"):
        resolve_config("nope", {}, {})
    with pytest.raises(ConfigError, match="loss must be bce or softmax"):
        resolve_config("ncf", {}, {"loss": "hinge"})
    with pytest.raises(ConfigError, match="must be a number"):
        resolve_config("ncf", {}, {"lr": "fast"})


def test_configs_of_earlier_runs_still_load():
    """run.json files of earlier versions held every model's keys flat, and SS4Rec's dropout as ss4rec_dropout."""
    old = {**dataclasses.asdict(TrainConfig()), "gmf_dim": 32, "dropout": 0.1, "bias_reg_grid": [1.0],
           "ss4rec_dropout": 0.3, "hidden": 16, "model": "ss4rec", "user_k": 5, "item_k": 5}
    cfg = RunConfig.from_dict(old)
    assert cfg.params.dropout == 0.3 and cfg.params.hidden == 16
    assert RunConfig.from_dict({**dataclasses.asdict(TrainConfig()), "model": "bias", "objective": "rating",
                                "chosen_reg": 3.0}).model == "bias"


def test_a_recorded_config_of_an_unknown_model_is_a_config_error():
    """A run.json config without a model, or of a model not registered here, is a ConfigError (the error every
    reader of run.json configs catches: load_run, run_users, the campaign planner), not a bare ValueError."""
    for flat in ({"lr": 0.001}, {"model": "not-a-model"}, {"model": None}):
        with pytest.raises(ConfigError, match="unknown model"):
            RunConfig.from_dict(flat)
