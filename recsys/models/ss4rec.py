"""SS4Rec (Xiao et al. 2025): continuous-time sequential recommendation with a time-aware S5 and a Mamba layer.

The released architecture by default (see ../shared/docs/ss4rec.md):
    E = item embedding (n_items x d, padding 0), no positional embedding, no input dropout/LayerNorm;
    N blocks of  a = LN(h + Dropout(S5(h, dt)));  h = LN(a + Dropout(Mamba(a)))   (one LayerNorm per block, eps 1e-12);
    output at the last valid position scored against the tied embeddings: logits = h_last @ E^T;
    full-softmax cross-entropy; RecBole init (every Linear/Embedding N(0, 0.02), biases 0, which also overwrites
    Mamba's dt_proj bias init); hidden 64, 2 layers, dropout 0.2, Mamba d_state 32 / d_conv 4 / expand 2, S5 state 32.

Time: dt_k = t_{k+1} - t_k, the gap AFTER item k; at the last valid position t_target - t_last (the model is told when
the interaction it predicts happens); padding 0. Raw int64 seconds by default.

Named deviations (each an option, default = released behaviour unless said otherwise):
- time_unit / time_transform: scale dt (seconds, hours, days) or log1p it. Default raw seconds (paper).
- time_normalise "span": dt divided by the (filtered) data's time span, which is what the released code sees on
  ML-100K, whose RecBole dataset file sets normalize_all (min-max scaling of the timestamps); default "none": raw
  seconds, what it sees on ML-1M.
- float32_timestamps: round timestamps to float32 like RecBole does (64 s spacing near 1e9, reorders ties);
  default False (int64 seconds, the correct data); True only to reproduce the paper's numbers.
- mamba_dt_init: "released" (RecBole init overwrites dt_proj, initial step softplus(0) ~ 0.69) or "mamba"
  (keep Mamba's log-uniform dt init). Default "released".
- rating_head (default off, as released): not in the paper; predicts the rating of interaction k from the state
  before it (which already integrated the gap t_k - t_{k-1}), the item's embedding and their product, trained
  jointly with weight rating_weight. It never changes the ranking logits.
- Ablations (issue 12; each a named `variant` of the run): `gap_ablation` changes what the S5 is fed as gaps
  ("zero": every gap 0, which with ZOH makes Bbar = 0, so the S5 state never changes and the layer is reduced to its
  D u feed-through; "constant": every real gap set to `assumed_gap`; "shuffled": each row's real gaps permuted);
  `target_gap` "withheld": every position's output is read after the assumed gap instead of the real gap to the
  next interaction (`TimeAwareS5(readout_dt=...)`), while the state carried forward integrates the real gaps, so no
  output depends on when the interaction it predicts happens (what a deployed recommender knows);
  `blocks` "s5" / "mamba": blocks with one of the two layers only. `assumed_gap` is the median of the non-zero gaps
  between consecutive training ratings (set from the data; the median of all gaps is 0 s on ML-100K, where half of
  consecutive ratings share their second).
- Rating-aware (issue 13; `rating_input`, with `rating_head`): each position also reads its rating (a level
  embedding and the residual from the item's bias), and the head predicts the next movie's rating with a learned
  decayed mean of recent residuals added (`recsys/models/rating_aware.py`, shared with SASRec); trained as a rating
  run (`--objective rating`), `ce_weight` weighting the next-item cross-entropy kept as a regulariser.
- Gap features (issue 23; `gap_features`, default "none" as released): time as an input feature besides the S5's
  decay. "all" adds to each item's embedding a learned embedding of the gap after it, log2-bucketed as SASRec's
  `target_gap_embedding` (`recsys/models/time_features.py`; at the last position the gap to the predicted
  interaction): with SASRec's target-gap variant a 2x2 of how time enters. "history": the gap BEFORE each item (a row
  of its own for the first), never the target's time (under all-positions training the gap after item j is the
  target of position j). The S5 keeps integrating what `target_gap` and `gap_ablation` say.
- Training on all positions of a window at once (causal, so identical to RecBole's per-prefix samples); how
  windows are cut (`window_stride` in the training config, `recsys.data.batch.training_windows`) decides whether
  every target sees its max_len items of history (stride 1: exactly RecBole's samples).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, replace
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from recsys.data.batch import SequenceBatch
from recsys.data.history import gaps_after
from recsys.models.base import Recommender
from recsys.models.losses import chunked_softmax_cross_entropy
from recsys.models.mamba import Mamba
from recsys.models.rating_aware import RatingSide, joint_loss
from recsys.models.s5 import TimeAwareS5
from recsys.models.time_features import GAP_BUCKETS, gap_buckets

GAP_ABLATIONS = ("none", "zero", "constant", "shuffled")
GAP_FEATURES = ("none", "all", "history")
FIRST_ITEM = GAP_BUCKETS  # gap_features "history": the row of a history's first item (no gap before it)
BLOCKS = ("s5+mamba", "s5", "mamba")


# What SS4Rec is, for every page and the registry (read without importing this file: recsys/catalogue.py).
CARDS = ({
    "key": "ss4rec", "cls": "SS4Rec", "name": "SS4Rec", "colour": "#d62728",
    "objectives": ("ranking", "rating"),  # rating: needs the rating head (rating-aware with rating_input)
    "reads_history": True, "live": True,
    "tiny": {"hidden": 16, "n_layers": 1, "d_state": 8, "s5_state": 8, "max_len": 20},
    # the gap to the predicted interaction reaches the score only through the S5, fed real (or permuted) gaps
    # or through the gap features, when they include the gap after the last item
    "target_time": [{"target_gap": ("given",), "gap_ablation": ("none", "shuffled"), "blocks": ("s5+mamba", "s5")},
                    {"gap_features": ("all",)}],
    "settings": {
        "target_gap": {"released": "given", "ablation": True, "meanings": {
            "withheld": "the gap to the predicted interaction withheld: each output is read after the median non-zero "
                        "training gap instead (what a deployed recommender knows)"}},
        "gap_ablation": {"released": "none", "ablation": True, "meanings": {
            "zero": "every gap 0: with zero-order hold the S5 state then never changes, so only its feed-through "
                    "D·u is left (the S5 becomes a per-position linear map)",
            "constant": "every gap set to the median non-zero training gap: time-blind, order kept",
            "shuffled": "each history's gaps permuted: the same gaps in the wrong places"}},
        "blocks": {"released": "s5+mamba", "ablation": True, "meanings": {
            "s5": "blocks without the Mamba layer (S5 only)",
            "mamba": "blocks without the S5 layer (Mamba only, close to Mamba4Rec; reads no time at all)"}},
        "gap_features": {"released": "none", "ablation": True, "meanings": {  # evidence, never the headline
            "all": "each item's input also holds a log2-bucketed embedding of the gap after it (the target's at the "
                   "last), as SASRec's target-gap variant: time as a feature and as the S5's decay",
            "history": "each item's input also holds a log2-bucketed embedding of the gap before it: time as a "
                       "feature from the history only, never the target's"}},
        "time_transform": {"released": "none", "meanings": {"log1p": "gaps log1p-scaled (long gaps keep some weight)"}},
        "time_normalise": {"released": "none", "meanings": {
            "span": "gaps divided by the data's time span (RecBole's ml-100k setting)"}},
        "time_unit": {"released": 1.0},
        "float32_timestamps": {"released": False, "meanings": {True: "timestamps rounded to float32 like RecBole"}},
        "mamba_dt_init": {"released": "released", "meanings": {"mamba": "Mamba's own step-size initialisation kept"}},
        "rating_head": {"released": False, "meanings": {True: "a joint rating head (our addition)"}},
        "rating_input": {"released": False, "meanings": {
            True: "reads the history's ratings and predicts the next one (rating-aware, issue 13)"}},
    },
},)

@dataclass
class SS4RecConfig:
    hidden: int = 64                    # item embedding and block width
    n_layers: int = 2                   # S5 + Mamba blocks
    dropout: float = 0.2                # after S5 and after Mamba, inside each block
    d_state: int = 32                   # Mamba state size
    s5_state: int = 32                  # S5 state size (complex, conjugate pairs)
    d_conv: int = 4                     # Mamba causal convolution width
    expand: int = 2                     # Mamba inner width = expand * hidden
    dt_min: float = 0.001               # S5 step-size initialisation range
    dt_max: float = 0.1
    time_unit: float = 1.0              # gaps are divided by this (1.0: raw seconds, as released)
    time_transform: str = "none"        # none | log1p (after time_unit)
    time_normalise: str = "none"        # none | span: gaps divided by the data's time span (RecBole's ml-100k
                                        # normalize_all: timestamps min-max scaled to [0, 1] before the gaps)
    float32_timestamps: bool = False    # reproduce RecBole's float32 timestamp rounding (paper fidelity only)
    mamba_dt_init: str = "released"     # released (RecBole init overwrites dt_proj) | mamba (keep Mamba's dt init)
    gap_ablation: str = "none"          # none | zero | constant | shuffled: what the S5 is fed instead of real gaps
    target_gap: str = "given"           # given (released: the gap to the predicted interaction is an input) | withheld
    blocks: str = "s5+mamba"            # s5+mamba (released) | s5 | mamba: which layers each block holds
    gap_features: str = "none"          # none (released) | all | history: a gap embedding added to each item's input
    rating_head: bool = False           # our addition (not released): predicts the next rating from the state
    rating_weight: float = 1.0          # weight of the rating MSE in the joint loss
    rating_input: bool = False          # rating-aware (issue 13): the history's ratings are inputs (needs the head)
    rating_skip: bool = True            # rating-aware read-out adds a learned decayed mean of recent residuals
    rating_bias_init: bool = False      # rating-aware: start mean and item biases from the bias floor's fit
    ce_weight: float = 1.0              # weight of the next-item cross-entropy (0: a pure rating model)
    logits_chunk: int = 8192            # rows of full-softmax logits held at once

    def __post_init__(self):
        if self.time_transform not in ("none", "log1p"):
            raise ValueError(f"time_transform must be 'none' or 'log1p', not {self.time_transform!r}")
        if self.time_normalise not in ("none", "span"):
            raise ValueError(f"time_normalise must be 'none' or 'span', not {self.time_normalise!r}")
        if self.mamba_dt_init not in ("released", "mamba"):
            raise ValueError(f"mamba_dt_init must be 'released' or 'mamba', not {self.mamba_dt_init!r}")
        if not float(self.dt_min) < float(self.dt_max):
            raise ValueError(f"dt_min ({self.dt_min}) must be below dt_max ({self.dt_max})")
        if self.rating_input and not self.rating_head:
            raise ValueError("rating_input (a rating-aware model) needs rating_head: true")
        if not float(self.ce_weight) >= 0 or not float(self.rating_weight) >= 0:
            raise ValueError("ce_weight and rating_weight must be >= 0")
        for name, allowed in (("gap_ablation", GAP_ABLATIONS), ("target_gap", ("given", "withheld")),
                              ("blocks", BLOCKS), ("gap_features", GAP_FEATURES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, not {getattr(self, name)!r}")

    @property
    def uses_assumed_gap(self) -> bool:
        return self.gap_ablation == "constant" or self.target_gap == "withheld"


class SS4RecBlock(nn.Module):
    """a = LN(h + Dropout(S5(h, dt)));  out = LN(a + Dropout(Mamba(a))); with layers="s5" or "mamba" the other
    layer is left out (its residual step becomes the identity)."""

    def __init__(self, hidden, s5_state, dt_min, dt_max, d_state, d_conv, expand, dropout, layers="s5+mamba"):
        super().__init__()
        self.s5 = TimeAwareS5(hidden, s5_state, dt_min=dt_min, dt_max=dt_max) if "s5" in layers else None
        self.mamba = Mamba(d_model=hidden, d_state=d_state, d_conv=d_conv, expand=expand) if "mamba" in layers else None
        self.norm = nn.LayerNorm(hidden, eps=1e-12)
        self.dropout = nn.Dropout(dropout)

    def forward(self, h, dt, return_states: bool = False, readout_dt=None):
        xs = None
        if self.s5 is not None:
            if return_states:
                s, xs = self.s5(h, dt, return_state=True, readout_dt=readout_dt)
            else:
                s = self.s5(h, dt, readout_dt=readout_dt)
            h = self.norm(h + self.dropout(s.to(h.dtype)))
        if self.mamba is not None:
            h = self.norm(h + self.dropout(self.mamba(h)))
        return (h, xs) if return_states else h

    def prefill(self, h, dt, readout_dt=None):
        """Like forward (eval), also returning (last S5 state, Mamba conv state, Mamba ssm state) for `step`."""
        x_last = conv = ssm = None
        if self.s5 is not None:
            s, xs = self.s5(h, dt, return_state=True, readout_dt=readout_dt)
            h = self.norm(h + s.to(h.dtype))
            x_last = xs[:, -1]
        if self.mamba is not None:
            m, (conv, ssm) = self.mamba(h, return_state=True)
            h = self.norm(h + m)
        return h, (x_last, conv, ssm)

    def empty_cache(self, device, dtype):
        conv = ssm = None
        if self.mamba is not None:
            conv, ssm = self.mamba.allocate_state(1, device=device, dtype=dtype)
        return None, conv, ssm

    def step(self, u, dt, cache):
        """One position after a prefilled history: u [1, d], dt [1] (the gap read out at this position)."""
        x_prev, conv, ssm = cache
        if self.s5 is not None:
            s, _ = self.s5.step(u, dt, x_prev)
            u = self.norm(u + s.to(u.dtype))
        if self.mamba is not None:
            m, _, _ = self.mamba.step(u, conv, ssm)
            u = self.norm(u + m)
        return u


class SS4Rec(Recommender):
    Config = SS4RecConfig
    time_span: torch.Tensor    # buffers, each registered only when the config uses it
    assumed_gap: torch.Tensor
    global_mean: torch.Tensor
    rating_mlp: nn.Sequential  # the joint rating head's

    def __init__(self, n_items: int, config: SS4RecConfig | None = None, **overrides):
        """n_items counts index 0 (padding); `overrides` replace fields of `config` (default: the released one)."""
        super().__init__()
        cfg = replace(config or SS4RecConfig(), **overrides)
        self.config = cfg
        self.n_items, self.hidden = n_items, cfg.hidden
        self.time_unit, self.time_transform = float(cfg.time_unit), cfg.time_transform
        self.float32_timestamps, self.logits_chunk = cfg.float32_timestamps, cfg.logits_chunk
        self.item_embedding = nn.Embedding(n_items, cfg.hidden, padding_idx=0)
        # the gap buckets and one row more: under "history", a history's first item (no gap before it)
        self.gap_embedding = nn.Embedding(GAP_BUCKETS + 1, cfg.hidden) if cfg.gap_features != "none" else None
        self.blocks = nn.ModuleList(SS4RecBlock(cfg.hidden, cfg.s5_state, cfg.dt_min, cfg.dt_max, cfg.d_state,
                                                cfg.d_conv, cfg.expand, cfg.dropout, cfg.blocks)
                                    for _ in range(cfg.n_layers))
        if cfg.time_normalise == "span":  # set from the training data (init_from_data); saved with the weights
            self.register_buffer("time_span", torch.tensor(1.0, dtype=torch.float64))
        if cfg.uses_assumed_gap:  # seconds; set from the training data (init_from_data); saved with the weights
            self.register_buffer("assumed_gap", torch.tensor(1.0, dtype=torch.float64))
        self.has_rating_head = cfg.rating_head
        self.rating_weight = float(cfg.rating_weight) if cfg.rating_head else 0.0
        self.ce_weight = float(cfg.ce_weight)
        self.rating_side = RatingSide(n_items, cfg.hidden, cfg.rating_skip) if cfg.rating_input else None
        if cfg.rating_head and not cfg.rating_input:
            # unused: reserved for a learned "no history yet" state; kept so the shipped weights still load
            self.rating_start = nn.Parameter(torch.zeros(cfg.hidden))
            self.rating_mlp = nn.Sequential(nn.Linear(3 * cfg.hidden, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, 1))
            self.register_buffer("global_mean", torch.tensor(3.5))
        self._recbole_init(keep_mamba_dt=cfg.mamba_dt_init == "mamba")
        if self.rating_side is not None:
            self.rating_side.reset_parameters()

    @classmethod
    def from_config(cls, config, n_users: int, n_items: int) -> SS4Rec:
        return cls(n_items, config.params)

    @property
    def block_list(self) -> list[SS4RecBlock]:
        """The blocks, typed (iterating an nn.ModuleList gives a type checker plain Modules)."""
        return cast(list[SS4RecBlock], list(self.blocks))

    @property
    def has_rating(self) -> bool:
        return self.has_rating_head

    def init_from_data(self, task) -> None:
        if self.config.uses_assumed_gap:
            self.assumed_gap.fill_(median_nonzero_gap(task))
        if self.config.time_normalise == "span":
            ts = task.prepared.interactions["timestamp"].to_numpy()
            self.time_span.fill_(float(max(int(ts.max()) - int(ts.min()), 1)))
        if self.rating_side is not None:
            self.rating_side.init_from_data(task, self.config.rating_bias_init)
        elif self.has_rating_head:  # the head predicts residuals around the training mean
            self.global_mean.fill_(task.train_mean)

    def _recbole_init(self, keep_mamba_dt: bool):
        for name, m in self.named_modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                if keep_mamba_dt and name.endswith("mamba.dt_proj"):
                    continue
                nn.init.normal_(m.weight, mean=0.0, std=0.02)
                if isinstance(m, nn.Linear) and m.bias is not None:
                    nn.init.zeros_(m.bias)

    # ----------------------------------------------------------------------------------------------- time
    def _times(self, t: torch.Tensor) -> torch.Tensor:
        t = t.to(torch.float64)
        if self.float32_timestamps:  # RecBole's float32 storage: rounds to 64 s around 1e9 (paper fidelity only)
            t = t.to(torch.float32).to(torch.float64)
        return t

    def scale_gaps(self, dt: torch.Tensor) -> torch.Tensor:
        """Raw second gaps -> what the S5 layer is fed (time_unit, optional log1p), in the layers' dtype."""
        dt = dt.clamp_min(0) / self.time_unit
        if self.config.time_normalise == "span":
            dt = dt / self.time_span.to(dt.dtype)
        if self.time_transform == "log1p":
            dt = torch.log1p(dt)
        w = self.item_embedding.weight.dtype
        return dt.to(w if w in (torch.float32, torch.float64) else torch.float32)

    def gaps(self, timestamps: torch.Tensor, lengths: torch.Tensor, target_times: torch.Tensor | None) -> torch.Tensor:
        """dt [B, L] as fed to the S5 layers: `recsys.data.history.gaps_after` (the gap after each item, the gap to
        the target at the last one, 0 on padding), changed as `gap_ablation` says, then scaled. With `target_gap`
        "withheld" the target's time is never read (the last position gets 0: nothing reads the state after it)."""
        return self._fed_gaps(timestamps, lengths, None if self.config.target_gap == "withheld" else target_times)

    def _fed_gaps(self, timestamps, lengths, next_times) -> torch.Tensor:
        """`gaps` with the time after the last item always read (live scoring's prefill: there it is a history
        item's, not the target's)."""
        tt = None if next_times is None else self._times(next_times)
        return self.scale_gaps(self.ablate_gaps(gaps_after(self._times(timestamps), lengths, tt), lengths))

    def ablate_gaps(self, dt: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Raw-second gaps [B, L] -> what `gap_ablation` feeds instead (padding stays 0)."""
        mode = self.config.gap_ablation
        if mode == "none":
            return dt
        if mode == "zero":
            return torch.zeros_like(dt)
        valid = torch.arange(dt.shape[1], device=dt.device)[None, :] < lengths[:, None]
        if mode == "constant":
            return torch.where(valid, self.assumed_gap.to(dt.dtype), torch.zeros_like(dt))
        # shuffled: each row's real gaps permuted among its real positions (fresh each training step, a fixed
        # permutation in evaluation so a score can be reproduced)
        gen = None
        if not self.training:
            gen = torch.Generator(device=dt.device)
            gen.manual_seed(0)
        keys = torch.rand(dt.shape, generator=gen, device=dt.device).masked_fill(~valid, 2.0)
        order = keys.argsort(dim=1)
        return torch.where(valid, dt.gather(1, order), torch.zeros_like(dt))

    def readout_gap(self, batch_size: int, length: int, device) -> torch.Tensor | None:
        """With `target_gap` "withheld", the assumed gap every output is read after (scaled), else None."""
        if self.config.target_gap != "withheld":
            return None
        return self.scale_gaps(self.assumed_gap.to(device).expand(batch_size, length))

    # ----------------------------------------------------------------------------------------------- encoder
    def gap_feature_ids(self, timestamps: torch.Tensor, lengths: torch.Tensor,
                        target_times: torch.Tensor | None) -> torch.Tensor:
        """Rows of `gap_embedding` [B, L]: "all": the gap after each item's bucket (the target's at the last);
        "history": the gap before each item's, FIRST_ITEM at the first. Raw seconds, whatever the S5 is fed."""
        if self.config.gap_features == "all":
            return gap_buckets(gaps_after(timestamps, lengths, target_times))
        before = torch.full_like(timestamps, FIRST_ITEM, dtype=torch.long)
        before[:, 1:] = gap_buckets((timestamps[:, 1:] - timestamps[:, :-1]).clamp_min(0))  # empty for one item
        return before

    def embed(self, items, timestamps, lengths, target_times=None) -> torch.Tensor:
        """Each position's input: the item's embedding, plus its gap feature under `gap_features`."""
        h = self.item_embedding(items)
        if self.gap_embedding is not None:
            h = h + self.gap_embedding(self.gap_feature_ids(timestamps, lengths, target_times))
        return h

    def encode(self, items, timestamps, lengths, target_times=None, return_states: bool = False, ratings=None):
        """Hidden states [B, L, d] of every position; with return_states also, per layer, the S5 states
        [B, L, P] (complex) and the block outputs [B, L, d]. A rating-aware model also reads `ratings` [B, L]."""
        h = self.embed(items, timestamps, lengths, target_times)
        if self.rating_side is not None:
            h = h + self.rating_side.read(items, ratings)
        dt = self.gaps(timestamps, lengths, target_times)
        readout = self.readout_gap(items.shape[0], items.shape[1], items.device)
        states, layers = [], []
        for block in self.blocks:
            if return_states:
                h, xs = block(h, dt, return_states=True, readout_dt=readout)
                states.append(xs)
                layers.append(h)
            else:
                h = block(h, dt, readout_dt=readout)
        return (h, states, layers) if return_states else h

    # ----------------------------------------------------------------------------------------------- live scoring
    @torch.no_grad()
    def prefill(self, items: torch.Tensor, timestamps: torch.Tensor) -> dict:
        """Run a history [1, n] through every layer up to its second-to-last item and keep the recurrent states.

        What comes after (the last item and the gap to "now") is one step per layer in `score_next`, so a what-if
        on the time of the next interaction costs microseconds, not a forward pass.
        """
        n = items.shape[1]
        if self.rating_side is not None:
            raise ValueError("a rating-aware run reads ratings; live ranking uses a ranking run")
        if n < 1:
            raise ValueError("an empty history cannot be scored; add at least one movie")
        if self.config.gap_ablation == "shuffled":
            # the permutation covers every gap, the one to "now" included, so nothing before "now" can be cached:
            # each what-if runs the full forward (found by the generated contract tests: stepping from cached
            # states permuted the history's gaps without the target's and differed from the forward by up to 5e-7)
            return {"history": (items, timestamps)}
        cache: dict[str, Any] = {"last_item": items[:, -1], "last_time": timestamps[:, -1], "layers": []}
        if self.config.gap_features == "history":  # the last item's feature is known now: the gap before it
            cache["last_feature"] = self.gap_feature_ids(timestamps, items.new_tensor([n]), None)[:, -1]
        if n == 1:
            for block in self.block_list:
                cache["layers"].append(block.empty_cache(items.device, self.item_embedding.weight.dtype))
            return cache
        before = torch.tensor([n - 1], device=items.device)
        h = self.embed(items[:, :-1], timestamps[:, :-1], before, timestamps[:, -1])  # "all": the last is t_{n-1}'s
        dt = self._fed_gaps(timestamps[:, :-1], before, timestamps[:, -1])
        readout = self.readout_gap(1, n - 1, items.device)
        for block in self.block_list:
            h, layer_cache = block.prefill(h, dt, readout)
            cache["layers"].append(layer_cache)
        return cache

    @torch.no_grad()
    def score_next(self, cache: dict, now: torch.Tensor) -> torch.Tensor:
        """Logits [1, n_items] for the interaction at time `now` after the prefilled history."""
        if "history" in cache:  # shuffled gaps: the full forward of the history and "now"
            items, timestamps = cache["history"]
            if bool(now.reshape(-1)[0] < timestamps[0, -1]):
                raise ValueError("'now' is before the last movie of the history")
            return self.score(SequenceBatch(users=torch.zeros(1, dtype=torch.long, device=items.device), items=items,
                                            timestamps=timestamps, lengths=torch.tensor([items.shape[1]]),
                                            target_times=now.reshape(1)))
        one = torch.ones(1, dtype=torch.long, device=now.device)
        raw = gaps_after(self._times(cache["last_time"].reshape(1, 1)), one,
                         self._times(now.reshape(1)))[:, 0]
        if bool(raw < 0):
            raise ValueError("'now' is before the last movie of the history")
        readout = self.readout_gap(1, 1, now.device)
        if readout is not None:  # the model does not read when "now" is
            dt = readout[:, 0]
        else:
            dt = self.scale_gaps(self.ablate_gaps(raw[:, None], one)[:, 0])
        u = self.item_embedding(cache["last_item"])
        if self.gap_embedding is not None:  # the last item's gap feature: to "now" ("all"), or the one before it
            u = u + self.gap_embedding(gap_buckets(raw) if self.config.gap_features == "all"
                                       else cache["last_feature"])
        for block, layer_cache in zip(self.block_list, cache["layers"]):
            u = block.step(u, dt, layer_cache)
        return u @ self.item_embedding.weight.T

    @property
    def reads_target_time(self) -> bool:
        """Whether a score depends on the time of the interaction it predicts (the what-if gap means something)."""
        return self.card.reads_target_time(dataclasses.asdict(self.config))  # the rule on SS4Rec's card

    def score(self, batch: SequenceBatch) -> torch.Tensor:
        """Full-catalogue logits [B, n_items] for histories and the time of the interaction each predicts."""
        assert batch.lengths is not None
        h = self.encode(batch.items, batch.timestamps, batch.lengths, batch.target_times, ratings=batch.ratings)
        return self.gather_last(h, batch.lengths) @ self.item_embedding.weight.T

    def predict_rating(self, batch: SequenceBatch) -> torch.Tensor:
        """The rating of `batch.targets` from the state after each history (with the target's time)."""
        if not self.has_rating_head:
            return super().predict_rating(batch)
        assert batch.lengths is not None and batch.targets is not None
        h = self.encode(batch.items, batch.timestamps, batch.lengths, batch.target_times, ratings=batch.ratings)
        offset = self.rating_side.last_offset(batch) if self.rating_side is not None else None
        return self.rating_from_state(self.gather_last(h, batch.lengths), batch.targets, offset)

    def rating_from_state(self, state: torch.Tensor, items: torch.Tensor, offset=None) -> torch.Tensor:
        e = self.item_embedding(items)
        if self.rating_side is not None:
            return self.rating_side.predict(state, e, items, offset)
        return self.global_mean + self.rating_mlp(torch.cat([state, e, state * e], dim=-1)).squeeze(-1)

    # ----------------------------------------------------------------------------------------------- training
    def forward(self, batch: SequenceBatch) -> torch.Tensor:
        """All-positions training loss: position j predicts targets[:, j] from items[:, :j+1]; full-softmax CE,
        plus rating_weight x the rating MSE when the model has a rating head and the batch has ratings (ce_weight
        scales the cross-entropy; 0 leaves it out: a pure rating model)."""
        assert batch.items is not None and batch.targets is not None
        h = self.encode(batch.items, batch.timestamps, batch.lengths, batch.target_times, ratings=batch.ratings)
        valid = batch.targets > 0
        hv = h[valid]
        tv = batch.targets[valid]
        ce = (chunked_softmax_cross_entropy(hv, self.item_embedding.weight, tv, self.logits_chunk)
              if self.ce_weight else None)
        pred = target = None
        if self.has_rating_head and batch.target_ratings is not None:
            offset = self.rating_side.offsets(batch.items, batch.ratings) if self.rating_side is not None else None
            pred = self.rating_from_state(hv, tv, None if offset is None else offset[valid])
            target = batch.target_ratings[valid]
        return joint_loss(ce, self.ce_weight, pred, target, self.rating_weight)


def median_nonzero_gap(task) -> float:
    """The median of the positive gaps (seconds) between consecutive training ratings of the same user."""
    seqs = task.train_seqs
    gaps = np.diff(seqs.timestamps)
    row = np.repeat(np.arange(len(seqs)), np.diff(seqs.indptr))
    gaps = gaps[(row[1:] == row[:-1]) & (gaps > 0)]
    return float(np.median(gaps)) if len(gaps) else 1.0


def n_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["SS4Rec", "SS4RecConfig", "chunked_softmax_cross_entropy", "n_parameters"]
