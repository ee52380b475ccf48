"""Contract tests generated from the registry and from each card's settings (issue 22): a new model, or a new value
of a variant setting, is tested here without a test written for it. Test ids carry the registry key, so
`pytest -k ss4rec tests/test_contracts.py` runs one model's contract.

- every model: its card agrees with its class and Config (released values are the defaults, the facts the class
  gets are the card's), and training -> saving -> restoring -> re-evaluating gives the recorded metrics exactly; its
  run is then a Compare row under its display name;
- every learned sequence model: padding and items after a history's end never change its scores, and a history
  scores the same alone as in a batch of longer ones;
- every value of every setting a card lists: the model builds with it (or the configuration refuses it with a
  message), and where the model scores live from cached states, live scoring equals the full forward.

The worked example of "adding a model" closes the file: a last-item model defined here, registered for the test
only, passes the same contracts and appears on Compare with its name.
"""
from __future__ import annotations

import dataclasses
import math
import re
import typing
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

from recsys import catalogue
from recsys import compare as C
from recsys.config import ConfigError, resolve_config
from recsys.data.batch import SequenceBatch
from recsys.models import MODELS, CatalogueSize, build_model, register_model, unregister_model
from recsys.models.base import Recommender
from recsys.training.reevaluate import rebuild_run
from recsys.training.runner import run_training

CARDS = catalogue.cards()
KEYS = list(CARDS)
SEQUENCE = [k for k in KEYS if CARDS[k].reads_history and not CARDS[k].floor and "ranking" in CARDS[k].objectives]
VARIANTS = [(k, name, value) for k in KEYS for name, s in CARDS[k].settings.items() for value in s.meanings]


def tiny_model(key: str, n_items: int = 30, **overrides):
    torch.manual_seed(0)
    cfg = resolve_config(key, {}, {**CARDS[key].tiny, **overrides})
    return build_model(cfg, CatalogueSize(4, n_items)).double().eval(), cfg


def histories(n_items: int, rows: int = 3, width: int = 9, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    items = torch.randint(1, n_items + 1, (rows, width), generator=g)
    gaps = torch.randint(0, 5000, (rows, width), generator=g)
    times = 10**9 + torch.cumsum(gaps, 1)
    return items, times


def batch(items, times, lengths, target_times) -> SequenceBatch:
    return SequenceBatch(users=torch.zeros(len(items), dtype=torch.long), items=items, timestamps=times,
                         lengths=torch.as_tensor(lengths), target_times=torch.as_tensor(target_times))


# ------------------------------------------------------------------------------------------------ every model
@pytest.mark.parametrize("key", KEYS, ids=KEYS)
def test_card_agrees_with_its_model(key):
    card, cls = CARDS[key], MODELS[key]
    assert cls.__name__ == card.cls and cls.name == key
    assert (cls.objectives, cls.reads_history, cls.trainable) == (card.objectives, card.reads_history, not card.floor)
    assert card.colour and re.fullmatch(r"#[0-9a-f]{6}", card.colour), "every model has its own colour"
    assert sum(c.name == card.name for c in CARDS.values()) == 1, "display names are unique"
    defaults = cls.Config()
    for name, setting in card.settings.items():
        assert hasattr(defaults, name), f"{key}'s card lists {name}, which its Config does not have"
        assert setting.is_released(getattr(defaults, name)), f"{name}: the card's released value is not the default"
    for name in card.target_time_fields:
        assert hasattr(defaults, name), f"{key}'s target_time rule reads {name}, which its Config does not have"
    hints = typing.get_type_hints(cls.Config)
    assert all(f.name in hints for f in dataclasses.fields(cls.Config))
    resolve_config(key, {}, card.tiny)  # its test size is a valid configuration


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny run of every model, trained for one epoch on the embedded ML-100K (its first objective)."""
    root = tmp_path_factory.mktemp("contracts")
    for key in KEYS:
        cfg = resolve_config(key, {}, {**CARDS[key].tiny, "objective": CARDS[key].objectives[0], "epochs": 1,
                                       "batch_size": 512, "cpu_threads": 1})
        run_training(cfg, root / key, ["tests/test_contracts.py"], progress=False)
    return root


@pytest.mark.parametrize("key", KEYS, ids=KEYS)
def test_save_restore_reevaluate_gives_the_recorded_metrics(trained, key):
    recorded = C.scan_runs(trained / key).runs[0]
    assert recorded.status == "complete" and recorded.problem is None, recorded.problem
    r = rebuild_run(trained / key)
    metrics, _ = r.task.evaluate(r.model.eval(), "test", "cpu", batch_size=1024)
    for name, value in recorded.info["metrics"]["test"].items():
        assert math.isclose(metrics[name], value, rel_tol=0, abs_tol=1e-9), (name, metrics[name], value)


def test_every_model_is_a_compare_row_under_its_display_name(trained):
    runs = C.scan_runs(trained).runs
    assert sorted(r.info["model"] for r in runs) == sorted(KEYS)
    for r in runs:
        label = C.model_label(r.info)
        assert label.startswith(CARDS[r.info["model"]].name)
        assert label.endswith("(floor)") == CARDS[r.info["model"]].floor


# ------------------------------------------------------------------------------------------------ sequence models
@pytest.mark.parametrize("key", SEQUENCE, ids=SEQUENCE)
def test_padding_and_later_items_never_change_a_score(key):
    m, _ = tiny_model(key)
    items, times = histories(30)
    with torch.no_grad():
        for k in range(1, items.shape[1]):
            lengths = [k] * len(items)
            target = times[:, k - 1] + 60
            junk = items.clone()
            junk[:, k:] = items[:, k:].flip(0)  # other real items, and times, after the end
            clean = items.clone()
            clean[:, k:] = 0
            zero_t = times.clone()
            zero_t[:, k:] = 0
            a = m.score(batch(clean, zero_t, lengths, target))
            b = m.score(batch(junk, times, lengths, target))
            torch.testing.assert_close(a, b, rtol=0, atol=1e-9)
            alone = m.score(batch(clean[:1, :k], zero_t[:1, :k], [k], target[:1]))
            torch.testing.assert_close(alone[0], a[0], rtol=1e-9, atol=1e-9)


# ------------------------------------------------------------------------------------------------ variant settings
@pytest.mark.parametrize("key,name,value", VARIANTS, ids=[f"{k}-{n}-{v}" for k, n, v in VARIANTS])
def test_every_setting_value_builds_and_scores_live_as_it_evaluates(key, name, value):
    try:
        m, cfg = tiny_model(key, **{name: value})
    except ConfigError as exc:  # a value that needs another setting (rating_input without its head): said so
        assert name in str(exc) or "needs" in str(exc)
        return
    assert catalogue.reads_target_time({"model": key, "config": cfg.as_dict()}) == \
        CARDS[key].reads_target_time(cfg.as_dict())
    if not hasattr(m, "prefill"):
        return
    if getattr(m.config, "uses_assumed_gap", False):
        m.assumed_gap.fill_(30.0)
    if getattr(m, "time_span", None) is not None:
        m.time_span.fill_(1e6)
    items, times = histories(30, rows=1, width=6)
    cache = m.prefill(items, times)
    with torch.no_grad():
        for gap in (0, 30, 86400 * 40):
            now = times[:, -1] + gap
            torch.testing.assert_close(m.score_next(cache, now), m.score(batch(items, times, [6], now)),
                                       rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("key,name,value", [(k, None, None) for k in SEQUENCE] + VARIANTS,
                         ids=[f"{k}-released" for k in SEQUENCE] + [f"{k}-{n}-{v}" for k, n, v in VARIANTS])
def test_a_score_depends_on_the_targets_time_exactly_when_the_card_says_so(key, name, value):
    """The card's target_time rules are what the pages caveat ("told the time of the interaction it predicts") and
    what Live's what-if gap means: checked against the model itself for every variant value."""
    if key not in SEQUENCE:
        return
    try:
        m, cfg = tiny_model(key, **({name: value} if name else {}))
    except ConfigError:
        return
    if getattr(m.config, "uses_assumed_gap", False):
        m.assumed_gap.fill_(30.0)
    if getattr(m, "time_span", None) is not None:
        m.time_span.fill_(1e6)
    if getattr(m.config, "gap_ablation", None) == "shuffled":
        return  # a fresh permutation per call: scores differ anyway (its rule is read from its card, not measured)
    items, times = histories(30, rows=3, width=6)
    with torch.no_grad():
        soon = m.score(batch(items, times, [6] * 3, times[:, -1] + 5))
        later = m.score(batch(items, times, [6] * 3, times[:, -1] + 86400 * 300))
    moved = not torch.allclose(soon, later, rtol=0, atol=1e-9)
    assert moved == CARDS[key].reads_target_time(cfg.as_dict()), (key, name, value, moved)


# ------------------------------------------------------------------------------------------------ a model added here
@dataclass
class LastItemConfig:
    hidden: int = 8


class LastItem(Recommender):
    """The worked example of README's "Adding a model": scores every item from the last item's embedding."""

    Config = LastItemConfig

    def __init__(self, n_items: int, hidden: int):
        super().__init__()
        self.item_embedding = nn.Embedding(n_items, hidden, padding_idx=0)

    @classmethod
    def from_config(cls, config, n_users, n_items):
        return cls(n_items, config.params.hidden)

    def encode(self, items):
        return self.item_embedding(items)

    def score(self, batch):
        return self.gather_last(self.encode(batch.items), batch.lengths) @ self.item_embedding.weight.T

    def forward(self, batch):
        h = self.encode(batch.items)
        valid = batch.targets > 0
        return nn.functional.cross_entropy(h[valid] @ self.item_embedding.weight[1:].T, batch.targets[valid] - 1)


LAST_ITEM = catalogue.ModelCard(key="last-item", cls="LastItem", module="tests.test_contracts", name="Last item",
                                colour="#123456", objectives=("ranking",), reads_history=True, live=True,
                                tiny={"hidden": 8, "max_len": 20})


@pytest.fixture
def last_item():
    register_model(LastItem, LAST_ITEM)
    try:
        yield LAST_ITEM
    finally:
        unregister_model(LAST_ITEM.key)


def test_a_model_added_in_one_place_passes_the_contracts_and_shows_on_compare(last_item, tmp_path):
    assert "last-item" in MODELS and catalogue.display_name("last-item") == "Last item"
    m, _ = tiny_model("last-item")
    items, times = histories(30)
    with torch.no_grad():
        full = m.score(batch(items, times, [5, 5, 5], times[:, 4]))
        cut = items.clone()
        cut[:, 5:] = 0
        torch.testing.assert_close(full, m.score(batch(cut, times, [5, 5, 5], times[:, 4])))
    cfg = resolve_config("last-item", {}, {"hidden": 8, "max_len": 20, "epochs": 1, "batch_size": 512})
    run_training(cfg, tmp_path / "last-item", ["test"], progress=False)
    run = C.scan_runs(tmp_path).runs[0]
    assert run.status == "complete" and run.problem is None
    assert C.model_label(run.info) == "Last item" and "#123456" in catalogue.colours().values()
    assert "last-item" in catalogue.beside_ss4rec()  # offered on Live beside SS4Rec, with no edit there
    r = rebuild_run(tmp_path / "last-item")
    metrics, _ = r.task.evaluate(r.model.eval(), "test", "cpu", batch_size=1024)
    assert np.isclose(metrics["ndcg@10"], run.info["metrics"]["test"]["ndcg@10"], rtol=0, atol=1e-12)


def test_training_builds_each_batch_when_it_is_used(monkeypatch, tmp_path):
    """The engine iterates batches as they are used: a list of them was a second copy of the training windows."""
    from recsys.training import tasks

    made, used = [0], [0]
    real_batches, real_loss = tasks.SequenceTask.batches, tasks.SequenceTask.loss

    def counting(self, *args, **kwargs):
        for b in real_batches(self, *args, **kwargs):
            made[0] += 1
            yield b

    def loss(self, model, batch):
        used[0] += 1
        assert made[0] == used[0], "a batch was built before the step that uses it"
        return real_loss(self, model, batch)

    monkeypatch.setattr(tasks.SequenceTask, "batches", counting)
    monkeypatch.setattr(tasks.SequenceTask, "loss", loss)
    cfg = resolve_config("gru4rec", {}, {**CARDS["gru4rec"].tiny, "epochs": 1, "batch_size": 256})
    run_training(cfg, tmp_path / "lazy", ["test"], progress=False)
    assert used[0] > 1


def test_the_catalogue_and_the_compare_layer_never_import_torch():
    import subprocess
    import sys

    from tests.conftest import ROOT

    code = ("import sys; import recsys.catalogue, recsys.compare, recsys.charts; from recsys import catalogue;"
            "catalogue.cards(); catalogue.changes({'model': 'ss4rec', 'config': {'blocks': 'mamba'}});"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr[-2000:]
