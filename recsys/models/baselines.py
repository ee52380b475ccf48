"""The floors every comparison shows: global mean and regularised user+item biases (RMSE), most-popular (ranking).

A model that cannot beat its floor is a bug. Floors are fitted in closed form (`fit`), so they are exact and fast;
the bias regularisation is chosen on validation RMSE, never on test.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from recsys.data.batch import SequenceBatch
from recsys.models.base import Recommender

# The closed-form floors of this file, for every page and the registry (read without importing this file:
# recsys/catalogue.py).
CARDS = (
    {"key": "popular", "cls": "MostPopular", "name": "Popular", "colour": "#7f7f7f", "floor": True,
     "objectives": ("ranking",)},
    {"key": "global-mean", "cls": "GlobalMean", "name": "Global mean", "colour": "#17becf", "floor": True,
     "objectives": ("rating",)},
    {"key": "bias", "cls": "BiasBaseline", "name": "Bias", "colour": "#bcbd22", "floor": True,
     "objectives": ("rating",)},
    {"key": "recent-residual", "cls": "RecentResidual", "name": "Recent residual", "colour": "#e377c2",
     "floor": True, "objectives": ("rating",), "reads_history": True},
)

@dataclass
class GlobalMeanConfig:
    pass


@dataclass
class BiasConfig:
    bias_reg_grid: list[float] = field(default_factory=lambda: [1.0, 3.0, 10.0, 25.0])  # chosen on valid RMSE
    iters: int = 10  # alternating ridge updates


@dataclass
class RecentResidualConfig(BiasConfig):
    k_grid: list[int] = field(default_factory=lambda: [1, 2, 3, 5, 10, 20, 50])  # last k ratings; chosen on valid
    shrink_grid: list[float] = field(default_factory=lambda: [0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0])


@dataclass
class PopularConfig:
    pass


class _RatingFloor(Recommender):
    n_items: int

    @property
    def has_rating(self) -> bool:
        return True

    def score(self, batch: SequenceBatch) -> torch.Tensor:
        """The predicted rating of every item for each user."""
        n_items = self.n_items
        users = batch.users[:, None].expand(-1, n_items)
        return self.pair_ratings(users, torch.arange(n_items, device=users.device)[None, :].expand_as(users))

    def predict_rating(self, batch: SequenceBatch) -> torch.Tensor:
        assert batch.targets is not None
        return self.pair_ratings(batch.users, batch.targets)

    def pair_ratings(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """The predicted rating of each (user, item) pair, any equal shapes."""
        raise NotImplementedError


class GlobalMean(_RatingFloor):
    Config = GlobalMeanConfig
    mean: torch.Tensor  # buffers

    def __init__(self, n_items: int = 1, mean: float = 0.0):
        super().__init__()
        self.n_items = n_items
        self.register_buffer("mean", torch.tensor(float(mean)))

    @classmethod
    def from_config(cls, config, n_users: int, n_items: int) -> GlobalMean:
        return cls(n_items)

    def fit(self, task, device: str) -> dict:
        self.mean.fill_(float(np.mean(task.train.target_ratings.numpy())))
        return {}

    def pair_ratings(self, users, items):
        return self.mean.expand(users.shape)


def fit_biases(users, items, ratings, n_users: int, n_items: int, reg_user: float, reg_item: float,
               iters: int = 10) -> tuple[float, np.ndarray, np.ndarray]:
    """Closed-form regularised biases (mu, b_u, b_i) by alternating ridge updates (Koren 2008)."""
    users, items = np.asarray(users), np.asarray(items)
    r = np.asarray(ratings, dtype=np.float64)
    mu = float(r.mean())
    bu, bi = np.zeros(n_users), np.zeros(n_items)
    nu, ni = np.bincount(users, minlength=n_users), np.bincount(items, minlength=n_items)
    for _ in range(iters):
        bi = np.bincount(items, r - mu - bu[users], minlength=n_items) / (reg_item + ni)
        bu = np.bincount(users, r - mu - bi[items], minlength=n_users) / (reg_user + nu)
    return mu, bu, bi


class BiasBaseline(_RatingFloor):
    """r = mu + b_u + b_i, fitted by alternating ridge updates (Koren 2008): b_i = sum(r-mu-b_u)/(lambda_i+n_i)."""

    Config = BiasConfig
    mean: torch.Tensor  # buffers
    user_bias: torch.Tensor
    item_bias: torch.Tensor

    def __init__(self, n_users: int, n_items: int, reg_grid=(10.0,), iters: int = 10):
        super().__init__()
        self.n_items, self.reg_grid, self.iters = n_items, tuple(reg_grid), iters
        self.register_buffer("mean", torch.tensor(0.0))
        self.register_buffer("user_bias", torch.zeros(n_users))
        self.register_buffer("item_bias", torch.zeros(n_items))

    @classmethod
    def from_config(cls, config, n_users: int, n_items: int) -> BiasBaseline:
        return cls(n_users, n_items, config.params.bias_reg_grid, int(config.params.iters))

    def fit_reg(self, users, items, ratings, reg_user: float, reg_item: float) -> None:
        mu, bu, bi = fit_biases(users, items, ratings, len(self.user_bias), len(self.item_bias), reg_user, reg_item,
                                self.iters)
        self.mean.fill_(mu)
        self.user_bias.copy_(torch.from_numpy(bu).float())
        self.item_bias.copy_(torch.from_numpy(bi).float())

    def fit(self, task, device: str) -> dict:
        t = task.train
        best: tuple[float, float, dict[str, torch.Tensor]] | None = None
        for reg in self.reg_grid:
            self.fit_reg(t.users.numpy(), t.targets.numpy(), t.target_ratings.numpy(), reg, reg)
            rmse = task.evaluate(self, "valid", device)[0]["rmse"]
            if best is None or rmse < best[0]:
                best = (rmse, reg, {k: v.clone() for k, v in self.state_dict().items()})
        assert best is not None  # reg_grid is never empty
        self.load_state_dict(best[2])
        return {"chosen_reg": best[1]}

    def pair_ratings(self, users, items):
        return self.mean + self.user_bias[users] + self.item_bias[items]


class RecentResidual(BiasBaseline):
    """The bias floor plus a shrunk mean of the user's residuals over the last k ratings before the target:

        r_hat = mu + b_u + b_i + sum_{last k} (r_h - mu - b_u - b_h) / (n_k + lambda),   n_k = min(k, history)

    "Lately this user has rated above or below what the biases expect." The biases are the bias floor's (their
    regularisation chosen on validation RMSE with k = 0), then k and lambda on validation RMSE. The history is the
    task's (strictly earlier ratings, never the target's), so it needs a history-reading task.
    """

    Config = RecentResidualConfig
    k: torch.Tensor  # buffers
    shrink: torch.Tensor

    def __init__(self, n_users: int, n_items: int, reg_grid=(10.0,), iters: int = 10, k_grid=(5,),
                 shrink_grid=(1.0,)):
        super().__init__(n_users, n_items, reg_grid, iters)
        self.k_grid, self.shrink_grid = tuple(int(k) for k in k_grid), tuple(float(s) for s in shrink_grid)
        if any(k < 1 for k in self.k_grid) or any(s < 0 for s in self.shrink_grid):
            raise ValueError("k_grid needs k >= 1 and shrink_grid lambda >= 0")
        self.register_buffer("k", torch.tensor(0))
        self.register_buffer("shrink", torch.tensor(0.0))

    @classmethod
    def from_config(cls, config, n_users: int, n_items: int) -> RecentResidual:
        p = config.params
        return cls(n_users, n_items, p.bias_reg_grid, int(p.iters), p.k_grid, p.shrink_grid)

    def fit(self, task, device: str) -> dict:
        self.k.fill_(0)  # the plain bias floor while its regularisation is chosen
        chosen = super().fit(task, device)
        best: tuple[float, int, float] | None = None
        for k in self.k_grid:
            for lam in self.shrink_grid:
                self.k.fill_(k)
                self.shrink.fill_(lam)
                rmse = task.evaluate(self, "valid", device)[0]["rmse"]
                if best is None or rmse < best[0] - 1e-12:
                    best = (rmse, k, lam)
        assert best is not None  # k_grid and shrink_grid are never empty
        self.k.fill_(best[1])
        self.shrink.fill_(best[2])
        return {**chosen, "chosen_k": best[1], "chosen_shrink": best[2], "valid_rmse": best[0]}

    def predict_rating(self, batch: SequenceBatch) -> torch.Tensor:
        base = self.pair_ratings(batch.users, batch.targets)
        k = int(self.k)
        if k == 0 or batch.items is None or batch.items.shape[1] == 0:
            return base
        if batch.ratings is None:
            raise ValueError("the recent-residual floor needs the history's ratings")
        assert batch.lengths is not None
        pos = torch.arange(batch.items.shape[1], device=batch.items.device)[None, :]
        lengths = batch.lengths[:, None]
        recent = (pos < lengths) & (pos >= lengths - k)
        expected = self.mean + self.user_bias[batch.users][:, None] + self.item_bias[batch.items]
        res = torch.where(recent, batch.ratings.float() - expected, torch.zeros_like(expected))
        n = recent.sum(dim=1).float()
        denom = n + self.shrink
        return base + torch.where(denom > 0, res.sum(dim=1) / denom.clamp_min(1e-12), torch.zeros_like(base))


class MostPopular(Recommender):
    """Scores every item by its number of training interactions, the same list for every user."""

    Config = PopularConfig
    counts: torch.Tensor  # buffer

    def __init__(self, n_items: int):
        super().__init__()
        self.register_buffer("counts", torch.zeros(n_items))

    @classmethod
    def from_config(cls, config, n_users: int, n_items: int) -> MostPopular:
        return cls(n_items)

    def fit(self, task, device: str) -> dict:
        n_items = len(self.counts)
        self.counts.copy_(torch.from_numpy(np.bincount(task.train_items.numpy(), minlength=n_items)).float())
        self.counts[0] = -1.0  # padding is never recommended
        return {}

    def score(self, batch: SequenceBatch) -> torch.Tensor:
        return self.counts[None, :].expand(len(batch.users), -1)
