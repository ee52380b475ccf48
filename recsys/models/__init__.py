"""Recommender models behind one interface (`recsys.models.base.Recommender`), one registry and one factory.

Adding a model: one file with its `Recommender` subclass, its `Config` dataclass and its `CARDS` (what it is: name,
colour, floor or learned, objectives, reads a history or the target's time, what each variant setting means), one
line in `recsys.catalogue.REGISTRY`, one YAML recipe in `configs/`. The registry imports the class the card names and
gives it its card's facts (`name`, `objectives`, `reads_history`, `trainable`), so they are written once. Training,
re-evaluation, the benchmarks and the dashboard all build models with `build_model`, from a fresh configuration or
from a saved run's alike; tests/test_contracts.py tests every registered model without a test written for it.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass

from recsys import catalogue
from recsys.models.base import Recommender


def register_model(cls: type[Recommender], card: catalogue.ModelCard) -> type[Recommender]:
    """Give `cls` its card's facts and add it to MODELS and the catalogue (the registry below does this for every
    model of REGISTRY; a model defined elsewhere, e.g. in a test, calls it itself)."""
    cls.name = card.key
    cls.objectives = tuple(card.objectives)
    cls.reads_history = bool(card.reads_history)
    cls.trainable = not card.floor
    cls.card = card
    MODELS[card.key] = cls
    catalogue.register(card)
    return cls


def unregister_model(key: str) -> None:
    MODELS.pop(key, None)
    catalogue.unregister(key)


MODELS: dict[str, type[Recommender]] = {}
for _key, _card in catalogue.cards().items():
    register_model(getattr(importlib.import_module(f"recsys.models.{_card.module}"), _card.cls), _card)


def model_class(name: str) -> type[Recommender]:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}") from None


@dataclass(frozen=True)
class CatalogueSize:
    """How many users and items a model is built for (real ones, without padding), when there is no dataset at
    hand (benchmarks); a PreparedData has the same two attributes."""

    n_users: int
    n_items: int


def build_model(config, data) -> Recommender:
    """The model a RunConfig describes for `data` (a PreparedData or a CatalogueSize): the one factory."""
    return model_class(config.model).from_config(config, data.n_users + 1, data.n_items + 1)


def restore_model(config, prepared, state_dict: dict) -> Recommender:
    """A saved run's model: `build_model` exactly as for a fresh run, then its weights (strict), in eval mode.
    Raises RuntimeError when the weights do not fit the configuration."""
    model = build_model(config, prepared)
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


__all__ = ["MODELS", "CatalogueSize", "Recommender", "build_model", "model_class", "register_model", "restore_model",
           "unregister_model"]
