"""The one model interface that training, evaluation, the analyses and the dashboard call (RecBole's
`calculate_loss` / `full_sort_predict`, nanoGPT's `forward(batch) -> loss`).

A model is a `Recommender`: an nn.Module with a `Config` dataclass that holds every default of its
hyperparameters, built by `from_config(run_config, n_users, n_items)` (the same call for a fresh run and for a
saved one) and offering:

- `forward(batch) -> loss`: the training loss of a `SequenceBatch` (forward, so DistributedDataParallel sees it);
- `score(batch) -> [B, n_items]`: scores of the whole catalogue for each row (a history or a user);
- `predict_rating(batch) -> [B]`: the rating of `batch.targets`, for models whose `has_rating` is true.

Models fitted in closed form (the floors) set `trainable = False` and implement `fit(task, device)` instead of a
training loss. `init_from_data(task)` lets a trainable model take statistics of its training data (a rating mean)
before the first step; a saved run restores them from its weights.
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from recsys.data.batch import SequenceBatch
from recsys.models.losses import chunked_softmax_cross_entropy


class Recommender(nn.Module):
    Config: ClassVar[type]
    # set from the model's card by the registry (recsys.models.register_model), never written in a model file
    name: ClassVar[str]
    card: ClassVar[Any]
    objectives: ClassVar[tuple[str, ...]] = ("ranking",)  # what it can be trained for
    reads_history: ClassVar[bool] = False  # True: scores come from the history, False: from the user id alone
    trainable: ClassVar[bool] = True       # False: fitted in closed form by fit() (a floor)
    # what next_item_loss reads, set by the sequence models that call it (declared for the type checker only)
    item_embedding: nn.Embedding
    config: Any

    @classmethod
    def from_config(cls, config, n_users: int, n_items: int) -> Recommender:
        """A fresh model for a RunConfig; n_users / n_items count index 0 (padding)."""
        raise NotImplementedError

    @classmethod
    def sampled_negatives(cls, params) -> int:
        """How many negatives per positive its training batches need (0: none, e.g. a full softmax)."""
        return 0

    @property
    def has_rating(self) -> bool:
        return False

    def forward(self, batch: SequenceBatch) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} is fitted in closed form, not trained by a loss")

    def score(self, batch: SequenceBatch) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} does not rank items")

    def predict_rating(self, batch: SequenceBatch) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} does not predict ratings")

    @staticmethod
    def gather_last(h: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The state [B, d] at each left-aligned history's last real position (lengths - 1) of h [B, L, d]."""
        idx = (lengths - 1).clamp_min(0).view(-1, 1, 1).expand(-1, 1, h.shape[-1])
        return h.gather(1, idx).squeeze(1)

    def next_item_loss(self, h: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The all-positions next-item loss of a sequence model whose output is tied to its item embedding: position
        j's state h[:, j] scored against every item (full softmax, padding column 0 left out), padding targets (0)
        skipped; `logits_chunk` rows of logits at a time (its Config's field)."""
        valid = targets > 0
        return chunked_softmax_cross_entropy(h[valid], self.item_embedding.weight, targets[valid],
                                             int(self.config.logits_chunk))

    def init_from_data(self, task) -> None:
        """Statistics of the training data the model starts from (default: none)."""

    def fit(self, task, device: str) -> dict:
        """Closed-form fit on the task's training data; returns the choices it made (e.g. a regularisation)."""
        raise NotImplementedError(f"{type(self).__name__} is trained by the shared loop, not fitted")
