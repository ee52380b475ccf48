"""First-order Markov chain: the cheapest sequential floor for next-item ranking.

The next item after a history is scored by how often, in the training sequences, the history's last item was
followed directly by it: scores[b, i] = count(last_b -> i) + backoff * popularity(i) / max popularity. It reads
only the last item, so a sequence model that cannot beat it is not using order at all (a bug, or no signal).

Fitted in closed form on each user's TRAINING sequence (`task.loo.train_sequences()`, the leave-one-out valid and
test items removed): transitions a -> b over consecutive items of one user (never across users), and item
popularity over the same training items.

Back-off. `backoff * popularity / max popularity` is at most `backoff`, so for any 0 < backoff < 1 it never outweighs
one transition: the ranking is exactly (transition count, then popularity), the same for every such value, and
popularity only orders items with equal counts and fills the rows of items never followed by anything (and rows
with an empty history). backoff >= 1 turns it into a real mixture (popularity may outrank rare transitions); 0 leaves
ties unbroken (ranked pessimistically). The default 0.5 is "small" in that sense; it is not 1e-3 because evaluation
ranks float32 scores: the back-off step between two items whose popularities differ by one rating is
backoff / max popularity (~6e-6 on ML-25M with 0.5, ~1e-8 with 1e-3), and float32 only resolves it on top of counts
below ~50 (0.5) versus below 1 (1e-3).

Ignored: time (gaps between ratings, recency), the ratings' values, everything before the last item, and the user.

Storage is sparse (CSR over source items: `indptr` [n_items + 1], `next_items` / `counts` [n_transitions], plus
`popularity` [n_items]) so that ML-25M's 59k items never need an n_items^2 matrix. The CSR sizes are known only
after `fit`; loading a state dict resizes those two buffers first and checks the CSR is consistent, while strict
loading still refuses missing or unexpected keys and a wrong-sized `indptr` / `popularity`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from recsys.data.batch import SequenceBatch
from recsys.models.base import Recommender

_SIZED_AFTER_FIT = ("next_items", "counts")  # buffers whose length is the number of distinct transitions


# What the Markov floor is, for every page and the registry (read without importing this file: recsys/catalogue.py).
CARDS = ({"key": "markov", "cls": "MarkovChain", "name": "Markov", "colour": "#8c564b", "floor": True,
          "objectives": ("ranking",), "reads_history": True, "live": True},)

@dataclass
class MarkovConfig:
    # weight of the popularity back-off (popularity scaled to [0, 1]); any value in (0, 1) gives the same ranking:
    # transition counts first, popularity among equal counts; 0.5 keeps that order resolvable in float32 (docstring)
    backoff: float = 0.5

    def __post_init__(self):
        if not float(self.backoff) >= 0:
            raise ValueError(f"backoff must be >= 0, not {self.backoff!r}")


def transition_counts(seqs, n_items: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """CSR (indptr [n_items + 1], next_items, counts) of the transitions a -> b between consecutive items of each
    sequence row of `seqs` (a `Sequences`), next items sorted within each source; and the number of transitions."""
    items = np.asarray(seqs.items, dtype=np.int64)
    row_of = np.repeat(np.arange(len(seqs.lengths)), seqs.lengths)
    same_row = row_of[:-1] == row_of[1:]  # a pair of positions that belong to one user
    src, dst = items[:-1][same_row], items[1:][same_row]
    keys, counts = np.unique(src * n_items + dst, return_counts=True)  # sorted by (source, next item)
    indptr = np.concatenate([[0], np.cumsum(np.bincount(keys // n_items, minlength=n_items))]).astype(np.int64)
    return indptr, keys % n_items, counts.astype(np.float32), int(len(src))


class MarkovChain(Recommender):
    """Scores the next item by its transition count from the history's last item, popularity breaking ties."""

    Config = MarkovConfig
    indptr: torch.Tensor  # buffers (replaced whole by fit)
    next_items: torch.Tensor
    counts: torch.Tensor
    popularity: torch.Tensor

    def __init__(self, n_items: int, backoff: float = 0.5):
        super().__init__()
        self.n_items, self.backoff = int(n_items), float(backoff)
        self.register_buffer("indptr", torch.zeros(self.n_items + 1, dtype=torch.long))
        self.register_buffer("next_items", torch.zeros(0, dtype=torch.long))
        self.register_buffer("counts", torch.zeros(0))
        self.register_buffer("popularity", torch.zeros(self.n_items))

    @classmethod
    def from_config(cls, config, n_users: int, n_items: int) -> MarkovChain:
        return cls(n_items, float(config.params.backoff))

    def fit(self, task, device: str) -> dict:
        seqs = task.loo.train_sequences()
        n = self.n_items
        items = np.asarray(seqs.items, dtype=np.int64)
        if len(items) and (items.min() < 1 or items.max() >= n):
            raise ValueError(f"training items must be real items in [1, {n - 1}], got [{items.min()}, {items.max()}]")
        indptr, next_items, counts, n_pairs = transition_counts(seqs, n)
        popularity = np.bincount(items, minlength=n).astype(np.float32)
        at = self.indptr.device
        self.indptr = torch.from_numpy(indptr).to(at)
        self.next_items = torch.from_numpy(next_items).to(at)
        self.counts = torch.from_numpy(counts).to(at)
        self.popularity = torch.from_numpy(popularity).to(at)
        out_degree = np.diff(indptr)
        return {"n_transitions": n_pairs, "n_distinct_transitions": int(len(next_items)),
                "share_items_with_successor": float((out_degree[1:] > 0).mean()) if n > 1 else 0.0,
                "mean_successors": float(out_degree[1:][out_degree[1:] > 0].mean()) if len(next_items) else 0.0,
                "n_training_items": int(len(items))}

    def prior(self) -> torch.Tensor:
        """[n_items] back-off scores: backoff * popularity / max popularity, and -1 (below all) for padding 0."""
        out = self.backoff * self.popularity / self.popularity.max().clamp(min=1.0)
        out[0] = -1.0
        return out

    def score(self, batch: SequenceBatch) -> torch.Tensor:
        lengths = batch.lengths
        assert lengths is not None  # a history batch (the model reads histories)
        n_rows = len(lengths)
        scores = self.prior()[None, :].repeat(n_rows, 1)
        if batch.items is None or not n_rows or batch.items.shape[1] == 0:
            return scores
        idx = (lengths - 1).clamp(min=0)[:, None]
        last = torch.where(lengths > 0, batch.items.gather(1, idx).squeeze(1), 0)  # padding 0: no transitions
        start = self.indptr[last]
        n_next = self.indptr[last + 1] - start
        rows = torch.repeat_interleave(torch.arange(n_rows, device=scores.device), n_next)
        first = torch.cumsum(n_next, 0) - n_next  # where each row's slice starts in the gathered flat list
        pos = torch.arange(len(rows), device=scores.device) + torch.repeat_interleave(start - first, n_next)
        scores.index_put_((rows, self.next_items[pos]), self.counts[pos], accumulate=True)
        return scores

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        """Resize the transition buffers to the saved ones (their size is only known after fit), after checking the
        saved CSR is consistent; everything else (missing / unexpected keys, the fixed-size buffers' shapes) is
        nn.Module's strict loading."""
        got = {k: state_dict.get(prefix + k) for k in ("indptr", *_SIZED_AFTER_FIT)}
        if all(isinstance(t, torch.Tensor) for t in got.values()):
            problem = self._csr_problem(got["indptr"], got["next_items"], got["counts"])
            if problem:
                error_msgs.append(f"{type(self).__name__}: inconsistent transitions in the state dict: {problem}")
            else:
                for name in _SIZED_AFTER_FIT:
                    old = self._buffers[name]
                    self._buffers[name] = torch.empty(got[name].shape, dtype=old.dtype, device=old.device)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def _csr_problem(self, indptr, next_items, counts) -> str | None:
        if indptr.shape != (self.n_items + 1,):
            return None  # reported by the strict shape check
        if next_items.dim() != 1 or counts.shape != next_items.shape:
            return f"next_items {tuple(next_items.shape)} and counts {tuple(counts.shape)} must be equal 1-d"
        if int(indptr[0]) != 0 or int(indptr[-1]) != len(next_items) or bool((indptr.diff() < 0).any()):
            return f"indptr must rise from 0 to {len(next_items)}"
        if len(next_items) and (int(next_items.min()) < 1 or int(next_items.max()) >= self.n_items):
            return f"next items must be real items in [1, {self.n_items - 1}]"
        return None
