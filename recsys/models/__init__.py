"""Recommender models behind one interface (`recsys.models.base.Recommender`), one registry and one factory.

Adding a model: one file with its `Recommender` subclass and `Config` dataclass, one line in `MODELS`, one YAML
recipe in `configs/`. Training, re-evaluation, the benchmarks and the dashboard all build models with
`build_model`, from a fresh configuration or from a saved run's alike.
"""
from __future__ import annotations

from dataclasses import dataclass

from recsys.models.base import Recommender
from recsys.models.baselines import BiasBaseline, GlobalMean, MostPopular, RecentResidual
from recsys.models.gru4rec import GRU4Rec
from recsys.models.markov import MarkovChain
from recsys.models.ncf import NeuMF
from recsys.models.sasrec import SASRec
from recsys.models.ss4rec import SS4Rec

MODELS: dict[str, type[Recommender]] = {
    "ncf": NeuMF,
    "ss4rec": SS4Rec,
    "sasrec": SASRec,
    "gru4rec": GRU4Rec,
    "global-mean": GlobalMean,
    "bias": BiasBaseline,
    "recent-residual": RecentResidual,
    "popular": MostPopular,
    "markov": MarkovChain,
}


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


__all__ = ["MODELS", "CatalogueSize", "Recommender", "build_model", "model_class", "restore_model"]
