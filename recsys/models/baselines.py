"""The floors every comparison shows: global mean and regularised user+item biases (RMSE), most-popular (ranking).

A model that cannot beat its floor is a bug. Floors are fitted in closed form, so they are exact and fast.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn


class GlobalMean(nn.Module):
    def __init__(self, mean: float = 0.0):
        super().__init__()
        self.register_buffer("mean", torch.tensor(float(mean)))

    @classmethod
    def fit(cls, ratings: np.ndarray) -> "GlobalMean":
        return cls(float(np.mean(ratings)))

    def forward(self, users, items):
        return self.mean.expand(users.shape)


class BiasBaseline(nn.Module):
    """r = mu + b_u + b_i, fitted by alternating ridge updates (Koren 2008): b_i = sum(r-mu-b_u)/(lambda_i+n_i)."""

    def __init__(self, n_users: int, n_items: int):
        super().__init__()
        self.register_buffer("mean", torch.tensor(0.0))
        self.register_buffer("user_bias", torch.zeros(n_users))
        self.register_buffer("item_bias", torch.zeros(n_items))

    @classmethod
    def fit(cls, users, items, ratings, n_users: int, n_items: int, reg_user: float = 10.0, reg_item: float = 10.0,
            iters: int = 10) -> "BiasBaseline":
        users, items = np.asarray(users), np.asarray(items)
        r = np.asarray(ratings, dtype=np.float64)
        mu = r.mean()
        bu, bi = np.zeros(n_users), np.zeros(n_items)
        nu, ni = np.bincount(users, minlength=n_users), np.bincount(items, minlength=n_items)
        for _ in range(iters):
            bi = np.bincount(items, r - mu - bu[users], minlength=n_items) / (reg_item + ni)
            bu = np.bincount(users, r - mu - bi[items], minlength=n_users) / (reg_user + nu)
        m = cls(n_users, n_items)
        m.mean.fill_(mu)
        m.user_bias.copy_(torch.from_numpy(bu).float())
        m.item_bias.copy_(torch.from_numpy(bi).float())
        return m

    def forward(self, users, items):
        return self.mean + self.user_bias[users] + self.item_bias[items]


class MostPopular(nn.Module):
    """Scores every item by its number of training interactions, the same list for every user."""

    def __init__(self, n_items: int):
        super().__init__()
        self.register_buffer("counts", torch.zeros(n_items))

    @classmethod
    def fit(cls, items, n_items: int) -> "MostPopular":
        m = cls(n_items)
        m.counts.copy_(torch.from_numpy(np.bincount(np.asarray(items), minlength=n_items)).float())
        m.counts[0] = -1.0  # padding is never recommended
        return m

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        return self.counts[None, :].expand(len(users), -1)

    def score_cases(self, batch: dict) -> torch.Tensor:
        return self.score_all(batch["users"])
