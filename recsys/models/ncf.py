"""Neural Collaborative Filtering (He et al. 2017): NeuMF, a GMF tower and an MLP tower fused by one output layer.

Two objectives share the architecture:
- rating: the fused output plus a global mean and user/item biases is the predicted rating (MSE); the biases are a
  named deviation from the paper, which models implicit feedback only, so the network learns residuals around
  the strong user+item bias floor instead of the whole rating.
- ranking: the fused output is a logit for "user interacts with item", trained with sampled negatives (BCE, as in
  the paper) or a full softmax over the catalogue, and scored against every item for full ranking.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from recsys.data.batch import SequenceBatch
from recsys.models.base import Recommender

# What NCF is, for every page and the registry (read without importing this file: recsys/catalogue.py). Live shows
# it for a known user only: it scores a user id, not a history.
CARDS = ({"key": "ncf", "cls": "NeuMF", "name": "NCF", "colour": "#9467bd", "objectives": ("ranking", "rating"),
          "tiny": {"gmf_dim": 8, "mlp_dims": [16, 8]}},)

@dataclass
class NCFConfig:
    gmf_dim: int = 32                  # width of the GMF tower's embeddings
    mlp_dims: list[int] = field(default_factory=lambda: [64, 32, 16])  # MLP tower; the first is user+item width
    dropout: float = 0.1               # after every hidden MLP layer
    loss: str = "bce"                  # ranking loss: bce (sampled negatives, as in the paper) or softmax
    num_negatives: int = 4             # negatives per positive for bce

    def __post_init__(self):
        if self.loss not in ("bce", "softmax"):
            raise ValueError(f"loss must be bce or softmax, not {self.loss!r}")


class NeuMF(Recommender):
    Config = NCFConfig
    global_mean: torch.Tensor  # buffer of a rating model

    def __init__(self, n_users: int, n_items: int, gmf_dim: int, mlp_dims: tuple[int, ...], dropout: float,
                 rating_head: bool = False, loss: str = "bce"):
        """n_users / n_items include index 0 (padding)."""
        super().__init__()
        self.loss_name = loss
        if len(mlp_dims) < 1:
            raise ValueError("mlp_dims needs at least one layer")
        self.user_gmf = nn.Embedding(n_users, gmf_dim)
        self.item_gmf = nn.Embedding(n_items, gmf_dim)
        half = mlp_dims[0] // 2
        self.user_mlp = nn.Embedding(n_users, half)
        self.item_mlp = nn.Embedding(n_items, half)
        layers, width = [], 2 * half
        for d in mlp_dims[1:]:
            layers += [nn.Linear(width, d), nn.ReLU(), nn.Dropout(dropout)]
            width = d
        self.mlp = nn.Sequential(*layers)
        self.out = nn.Linear(gmf_dim + width, 1)
        self.rating_head = rating_head
        if rating_head:
            self.user_bias = nn.Embedding(n_users, 1)
            self.item_bias = nn.Embedding(n_items, 1)
            self.register_buffer("global_mean", torch.tensor(0.0))
        self.reset_parameters()

    @classmethod
    def from_config(cls, config, n_users: int, n_items: int) -> NeuMF:
        p = config.params
        return cls(n_users, n_items, int(p.gmf_dim), tuple(p.mlp_dims), float(p.dropout),
                   rating_head=config.train.objective == "rating", loss=p.loss)

    @classmethod
    def sampled_negatives(cls, params) -> int:
        return int(params.num_negatives) if params.loss == "bce" else 0

    @property
    def has_rating(self) -> bool:
        return self.rating_head

    def init_from_data(self, task) -> None:
        if self.rating_head:  # the network learns residuals around the training mean
            self.global_mean.fill_(task.train_mean)

    def reset_parameters(self):
        for emb in (self.user_gmf, self.item_gmf, self.user_mlp, self.item_mlp):
            nn.init.normal_(emb.weight, std=0.01)
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.kaiming_uniform_(self.out.weight, a=1, nonlinearity="sigmoid")
        nn.init.zeros_(self.out.bias)
        if self.rating_head:
            nn.init.zeros_(self.user_bias.weight)
            nn.init.zeros_(self.item_bias.weight)

    def forward(self, batch: SequenceBatch) -> torch.Tensor:
        """The training loss: MSE of the rating, or the ranking loss (BCE with sampled negatives, or softmax)."""
        users, items = batch.users, batch.targets
        assert items is not None
        if self.rating_head:
            assert batch.target_ratings is not None
            return F.mse_loss(self.score_pairs(users, items).float(), batch.target_ratings)
        if self.loss_name == "softmax":
            logits = self.score_all(users).float()
            logits[:, 0] = float("-inf")
            return F.cross_entropy(logits, items)
        assert batch.negatives is not None  # sampled for a bce model (sampled_negatives)
        pos = self.score_pairs(users, items).float()
        neg = self.score_pairs(users[:, None].expand_as(batch.negatives), batch.negatives).float()
        return (F.binary_cross_entropy_with_logits(pos, torch.ones_like(pos), reduction="sum")
                + F.binary_cross_entropy_with_logits(neg, torch.zeros_like(neg), reduction="sum")) / len(users)

    def score_pairs(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Score (rating or logit) for aligned user/item index tensors of any equal shape."""
        gmf = self.user_gmf(users) * self.item_gmf(items)
        mlp = self.mlp(torch.cat([self.user_mlp(users), self.item_mlp(items)], dim=-1))
        score = self.out(torch.cat([gmf, mlp], dim=-1)).squeeze(-1)
        if self.rating_head:
            score = score + self.global_mean + self.user_bias(users).squeeze(-1) + self.item_bias(items).squeeze(-1)
        return score

    def score_all(self, users: torch.Tensor, item_chunk: int = 8192) -> torch.Tensor:
        """[b, n_items] scores of every item for each user, built item-chunk by item-chunk to bound memory."""
        n_items = self.item_gmf.num_embeddings
        out = torch.empty(len(users), n_items, device=users.device)
        for start in range(0, n_items, item_chunk):
            items = torch.arange(start, min(n_items, start + item_chunk), device=users.device)
            u = users[:, None].expand(-1, len(items))
            out[:, start:start + len(items)] = self.score_pairs(u, items[None, :].expand(len(users), -1)).float()
        return out

    def score(self, batch: SequenceBatch) -> torch.Tensor:
        """Every item's score for each user (NCF only looks at who the user is, not their history): a logit, or the
        predicted rating for a rating model."""
        return self.score_all(batch.users)

    def predict_rating(self, batch: SequenceBatch) -> torch.Tensor:
        if not self.rating_head:
            return super().predict_rating(batch)
        assert batch.targets is not None
        return self.score_pairs(batch.users, batch.targets)
