"""Neural Collaborative Filtering (He et al. 2017): NeuMF, a GMF tower and an MLP tower fused by one output layer.

Two objectives share the architecture:
- rating: the fused output plus a global mean and user/item biases is the predicted rating (MSE); the biases are a
  named deviation from the paper, which models implicit feedback only, so the network learns residuals around
  the strong user+item bias floor instead of the whole rating.
- ranking: the fused output is a logit for "user interacts with item", trained with sampled negatives (BCE, as in
  the paper) or a full softmax over the catalogue, and scored against every item for full ranking.
"""
from __future__ import annotations

import torch
from torch import nn


class NeuMF(nn.Module):
    def __init__(self, n_users: int, n_items: int, gmf_dim: int = 32, mlp_dims: tuple[int, ...] = (64, 32, 16),
                 dropout: float = 0.1, rating_head: bool = False, global_mean: float = 0.0):
        """n_users / n_items include index 0 (padding)."""
        super().__init__()
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
            self.register_buffer("global_mean", torch.tensor(float(global_mean)))
        self.reset_parameters()

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

    def forward(self, users: torch.Tensor, items: torch.Tensor | None) -> torch.Tensor:
        """Score (rating or logit) for aligned user/item index tensors of any equal shape; items=None scores the
        whole catalogue (so a full-softmax loss still goes through forward, as DistributedDataParallel needs)."""
        if items is None:
            return self.score_all(users)
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
            out[:, start:start + len(items)] = self(u, items[None, :].expand(len(users), -1)).float()
        return out

    def score_cases(self, batch: dict) -> torch.Tensor:
        """Full-ranking scores for evaluation cases (NCF only looks at who the user is, not their history)."""
        return self.score_all(batch["users"])
