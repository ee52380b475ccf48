"""What makes a sequence model rating-aware (issue 13): it reads the ratings of the history and predicts the rating
of a given next (movie, time).

Shared by SS4Rec and SASRec (`rating_input: true`), so the two differ only in their encoder:

- input at position k: the movie's embedding plus `RatingReader(items_k, r_k)` = an embedding of the rating level
  (half stars 0.5..5, 0 = padding) plus a learned direction times the residual r_k - mean - b_i (how much more the
  user liked movie k than its average rater did, with the model's own item bias b_i);
- read-out at position k for the next movie j: mean + b_j + MLP([h_k, e_j, h_k * e_j]) (`RatingReadout`), plus
  (`rating_skip`, default on) a decayed, shrunk mean of the residuals at positions <= k:
  sum_i a^(k-i) res_i / (sum_i a^(k-i) + lambda), a and lambda learned (`RatingSkip`): the recent-residual floor's
  idea as a differentiable path, so the encoder only has to learn what the user's recent residuals do not say.

Causality: the encoders are causal, so the state at position k holds ratings 1..k and never the rating it
predicts (k + 1) or anything later; `tests/test_rating_aware.py` checks it by changing later ratings.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

N_LEVELS = 11  # 0 = padding / no rating, 1..10 = 0.5..5 stars in half-star steps


def rating_levels(ratings: torch.Tensor) -> torch.Tensor:
    """Ratings (0 on padding) -> level indices 0..10 (half stars, rounded)."""
    return torch.round(ratings.float() * 2).clamp(0, N_LEVELS - 1).long()


class RatingReader(nn.Module):
    """The rating part of each history position's input: level embedding + residual direction x residual."""

    def __init__(self, hidden: int):
        super().__init__()
        self.level = nn.Embedding(N_LEVELS, hidden, padding_idx=0)
        self.residual = nn.Linear(1, hidden, bias=False)

    def forward(self, ratings: torch.Tensor, item_bias: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
        """ratings [B, L] (0 on padding), item_bias [B, L] (the history movies' biases) -> [B, L, d]."""
        real = (ratings > 0).to(item_bias.dtype)
        res = (ratings.to(item_bias.dtype) - mean - item_bias) * real
        return self.level(rating_levels(ratings)) + self.residual(res.unsqueeze(-1))


class RatingReadout(nn.Module):
    """mean + b_item + MLP([state, e, state * e]): the predicted rating of movie `items` after `state`."""

    global_mean: torch.Tensor  # buffer

    def __init__(self, n_items: int, hidden: int):
        super().__init__()
        self.item_bias = nn.Embedding(n_items, 1)
        self.mlp = nn.Sequential(nn.Linear(3 * hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        self.register_buffer("global_mean", torch.tensor(3.5))

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.item_bias.weight)

    def bias(self, items: torch.Tensor) -> torch.Tensor:
        return self.item_bias(items).squeeze(-1)

    def forward(self, state: torch.Tensor, e: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.global_mean + self.bias(items) + self.mlp(torch.cat([state, e, state * e], dim=-1)).squeeze(-1)


class RatingSkip(nn.Module):
    """Per position k, sum_{i<=k} a^(k-i) res_i / (sum_{i<=k} a^(k-i) + lambda) over real positions; a in (0, 1)
    and lambda > 0 learned (initial 0.9 and 2)."""

    def __init__(self):
        super().__init__()
        self.decay_logit = nn.Parameter(torch.tensor(2.1972))   # sigmoid -> 0.9
        self.shrink_raw = nn.Parameter(torch.tensor(1.8546))    # softplus -> 2.0

    def forward(self, res: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        L = res.shape[1]
        a = torch.sigmoid(self.decay_logit)
        k = torch.arange(L, device=res.device)
        lag = (k[:, None] - k[None, :]).to(res.dtype)
        weights = torch.where(lag >= 0, a.to(res.dtype) ** lag.clamp_min(0), torch.zeros_like(lag))  # [k, i]
        num = (res * real) @ weights.T
        den = real @ weights.T + torch.nn.functional.softplus(self.shrink_raw)
        return num / den


class RatingSide(nn.Module):
    """Reader + read-out of one model (what its Config's `rating_input` switches on)."""

    def __init__(self, n_items: int, hidden: int, skip: bool = True):
        super().__init__()
        self.reader = RatingReader(hidden)
        self.readout = RatingReadout(n_items, hidden)
        self.skip = RatingSkip() if skip else None

    def init_from_data(self, task, bias_init: bool) -> None:
        """Start from the training mean, or (bias_init) from the bias floor's closed-form fit on the training
        ratings (mean and item biases, its regularisation chosen on validation RMSE as the floor's is): the item
        biases are then learned further, from a well-estimated start instead of zero."""
        self.readout.global_mean.fill_(task.train_mean)
        if not bias_init:
            return
        from recsys.models.baselines import fit_biases

        n_items = self.readout.item_bias.num_embeddings
        t, v = task.train, task.cases("valid")
        best: tuple[float, float, np.ndarray] | None = None
        for reg in (1.0, 3.0, 10.0, 25.0):  # the bias floor's grid, chosen on validation RMSE as the floor does
            mu, bu, bi = fit_biases(t.users.numpy(), t.targets.numpy(), t.target_ratings.numpy(),
                                    int(task.prepared.n_users) + 1, n_items, reg, reg)
            pred = np.clip(mu + bu[v.users.numpy()] + bi[v.targets.numpy()], *task.rating_scale)
            rmse = float(np.sqrt(np.mean((pred - v.target_ratings.numpy()) ** 2)))
            if best is None or rmse < best[0]:
                best = (rmse, mu, bi)
        assert best is not None
        with torch.no_grad():
            self.readout.global_mean.fill_(best[1])
            self.readout.item_bias.weight[:, 0] = torch.from_numpy(best[2]).to(self.readout.item_bias.weight.dtype)

    def reset_parameters(self) -> None:
        self.readout.reset_parameters()
        if self.skip is not None:
            with torch.no_grad():
                self.skip.decay_logit.fill_(2.1972)
                self.skip.shrink_raw.fill_(1.8546)

    def offsets(self, items: torch.Tensor, ratings: torch.Tensor | None) -> torch.Tensor | None:
        """The skip path's offset [B, L] at every position (None without it)."""
        if self.skip is None:
            return None
        if ratings is None:  # as read() says (it runs first, in the model's encode)
            raise ValueError("a rating-aware model needs the history's ratings (SequenceBatch.ratings)")
        real = (ratings > 0).to(torch.float32)
        res = (ratings.float() - self.readout.global_mean.float() - self.readout.bias(items).float()) * real
        return self.skip(res, real)

    def read(self, items: torch.Tensor, ratings: torch.Tensor | None) -> torch.Tensor:
        if ratings is None:
            raise ValueError("a rating-aware model needs the history's ratings (SequenceBatch.ratings)")
        return self.reader(ratings, self.readout.bias(items), self.readout.global_mean)

    def predict(self, state: torch.Tensor, e: torch.Tensor, items: torch.Tensor,
                offset: torch.Tensor | None = None) -> torch.Tensor:
        pred = self.readout(state, e, items)
        return pred if offset is None else pred + offset.to(pred.dtype)

    def last_offset(self, batch) -> torch.Tensor | None:
        """The skip offset after each case's whole history (0 for an empty one)."""
        off = self.offsets(batch.items, batch.ratings)
        if off is None:
            return None
        return off.gather(1, (batch.lengths - 1).clamp_min(0)[:, None]).squeeze(1) * (batch.lengths > 0)


def joint_loss(ce: torch.Tensor | None, ce_weight: float, pred: torch.Tensor | None, target: torch.Tensor | None,
               rating_weight: float) -> torch.Tensor:
    """ce_weight x next-item CE + rating_weight x rating MSE (either term left out when its weight is 0)."""
    terms = []
    if ce is not None and ce_weight:
        terms.append(ce_weight * ce)
    if pred is not None and rating_weight:
        assert target is not None, "a rating prediction comes with its target"
        terms.append(rating_weight * torch.nn.functional.mse_loss(pred.float(), target.float()))
    if not terms:
        raise ValueError("the loss has no term: ce_weight and rating_weight are both 0")
    return sum(terms[1:], terms[0])
