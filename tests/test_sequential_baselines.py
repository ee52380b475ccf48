"""SASRec and GRU4Rec (RecBole 1.2.1 baselines): causality, all-positions training equals per-prefix samples,
the full-softmax loss, learning, parameter counts and construction through the one factory."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from recsys.data.batch import SequenceBatch
from recsys.models.gru4rec import GRU4Rec
from recsys.models.sasrec import SASRec

MAX_LEN = 12


def small(name: str, n_items: int = 40, **kw):
    """A small model of each kind (eval mode: no dropout), seeded."""
    torch.manual_seed(0)
    if name == "sasrec":
        return SASRec(n_items, max_len=MAX_LEN, hidden_size=16, n_heads=2, inner_size=32, **kw).eval()
    return GRU4Rec(n_items, embedding_size=16, hidden_size=24, **kw).eval()


def batch(items, lengths, targets=None) -> SequenceBatch:
    items = torch.as_tensor(items)
    return SequenceBatch(users=torch.zeros(len(items), dtype=torch.long), items=items,
                         timestamps=torch.zeros_like(items), lengths=torch.as_tensor(lengths),
                         targets=None if targets is None else torch.as_tensor(targets))


def padded(rows: list[list[int]], width: int) -> torch.Tensor:
    return torch.tensor([r + [0] * (width - len(r)) for r in rows])


MODEL_NAMES = ["sasrec", "gru4rec"]


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_causality(name):
    """Changing the item at position j leaves every earlier state unchanged and changes the state at j."""
    m = small(name).double()
    g = torch.Generator().manual_seed(1)
    items = torch.randint(1, 40, (3, 8), generator=g)
    with torch.no_grad():
        h = m.encode(items)
        for j in range(items.shape[1]):
            changed = items.clone()
            changed[:, j] = changed[:, j] % 39 + 1  # another real item
            h2 = m.encode(changed)
            torch.testing.assert_close(h2[:, :j], h[:, :j], rtol=0, atol=1e-12)
            assert float((h2[:, j] - h[:, j]).abs().amax(-1).min()) > 1e-6


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_all_positions_equal_per_prefix_samples(name):
    """RecBole feeds every prefix as its own sample; one causal pass over a padded window batch gives the same
    logits, and padding after a history (or a batch's longer rows) never changes its scores."""
    m = small(name)
    rows = [[5, 17, 3, 39, 22, 8, 11], [9, 2, 30, 14], [7]]
    items = padded(rows, 9)  # padding after every row, rows of different lengths
    with torch.no_grad():
        logits = m.encode(items) @ m.item_embedding.weight.T
        prefixes = []
        for r, row in enumerate(rows):
            for j in range(len(row)):
                alone = m.score(batch([row[:j + 1]], [j + 1]))[0]
                torch.testing.assert_close(alone, logits[r, j], rtol=1e-5, atol=1e-5)
                prefixes.append((row[:j + 1], logits[r, j]))
        together = m.score(batch(padded([p for p, _ in prefixes], MAX_LEN), [len(p) for p, _ in prefixes]))
    torch.testing.assert_close(together, torch.stack([x for _, x in prefixes]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_loss_is_the_full_softmax_cross_entropy_at_valid_positions(name):
    m = small(name).double()
    items = padded([[5, 17, 3, 39, 22], [9, 2, 30], [7, 1]], 5)
    targets = padded([[17, 3, 39, 22, 4], [2, 0, 12], [1, 0]], 5)  # 0: padding, or a position outside the loss
    b = batch(items, [5, 3, 2], targets)
    loss = m(b)
    params = [p for p in m.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    valid = targets > 0
    h = m.encode(items)[valid]
    ref = F.cross_entropy(h @ m.item_embedding.weight[1:].T, targets[valid] - 1)  # item 0 is no class
    ref_grads = torch.autograd.grad(ref, params, allow_unused=True)
    torch.testing.assert_close(loss, ref, rtol=1e-10, atol=1e-10)
    for g, r in zip(grads, ref_grads):
        if r is not None:
            torch.testing.assert_close(g, r, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_training_lowers_the_loss(name):
    # each user walks items upward: after item i comes i+1, a pattern only a sequence model can find
    kw = {"hidden_dropout": 0.0, "attn_dropout": 0.0} if name == "sasrec" else {"dropout": 0.0}
    m = small(name, n_items=31, **kw).train()
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    starts = torch.randint(1, 20, (32,), generator=g)
    seq = starts[:, None] + torch.arange(11)[None, :]
    b = batch(seq[:, :-1], torch.full((32,), 10), seq[:, 1:])
    losses = []
    for _ in range(30):
        loss = m(b)
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert losses[-1] < 0.5 * losses[0], losses
    m.eval()
    with torch.no_grad():
        assert int(m.score(batch([[5, 6, 7]], [3]))[0, 1:].argmax()) + 1 == 8


def test_sasrec_padding_only_rows_stay_finite_and_histories_longer_than_max_len_fail():
    m = small("sasrec").train()
    items = padded([[4, 5, 6], []], 3)                # a row with no history: every key masked at every query
    b = batch(items, [3, 0], padded([[5, 6, 7], []], 3))
    loss = m(b)
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)
    assert torch.isfinite(m.eval().score(b)).all()
    with pytest.raises(ValueError, match="max_len=12"):
        m.score(batch(torch.ones(1, MAX_LEN + 1, dtype=torch.long), [MAX_LEN + 1]))


def test_parameter_counts_match_the_architectures():
    """Hand-counted from the architectures at RecBole's defaults on ML-100K (1,682 items + padding), max_len 50."""
    n_items, max_len = 1683, 50
    linear = lambda i, o, bias=True: i * o + (o if bias else 0)  # noqa: E731
    d, inner, layers = 64, 256, 2
    attention = 3 * linear(d, d) + linear(d, d) + 2 * d          # Q, K, V, output dense, LayerNorm
    feed_forward = linear(d, inner) + linear(inner, d) + 2 * d
    sasrec = n_items * d + max_len * d + 2 * d + layers * (attention + feed_forward)
    e, hid = 64, 128
    gru4rec = n_items * e + 3 * hid * e + 3 * hid * hid + linear(hid, e)  # GRU without biases: 3 gates
    assert (sasrec, gru4rec) == (211_008, 189_696)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(SASRec(n_items, max_len=max_len)) == sasrec
    assert count(GRU4Rec(n_items)) == gru4rec


def test_recbole_initialisation():
    torch.manual_seed(0)
    s = SASRec(2000, max_len=50).requires_grad_(False)
    assert abs(float(s.item_embedding.weight.std()) - 0.02) < 1e-3
    assert abs(float(s.blocks[0].feed_forward.dense_1.weight.std()) - 0.02) < 2e-3
    assert float(s.blocks[1].attention.query.bias.abs().max()) == 0.0
    assert float(s.blocks[0].attention.norm.weight.min()) == 1.0
    g = GRU4Rec(2000).requires_grad_(False)
    xavier_normal = (2.0 / (2000 + 64)) ** 0.5
    assert abs(float(g.item_embedding.weight.std()) - xavier_normal) < 0.05 * xavier_normal
    bound = (6.0 / (3 * 128 + 128)) ** 0.5                   # weight_hh_l0 [384, 128] as one matrix
    assert float(g.gru.weight_hh_l0.abs().max()) <= bound
    assert float(g.gru.weight_hh_l0.abs().max()) > 0.9 * bound


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_build_model_from_a_run_config(name):
    from recsys.config import resolve_config
    from recsys.models import CatalogueSize, build_model

    cfg = resolve_config(name, {}, {"max_len": 20})
    model = build_model(cfg, CatalogueSize(10, 30))
    assert type(model).name == name and model.item_embedding.num_embeddings == 31
    if name == "sasrec":
        assert model.position_embedding.num_embeddings == 20
    b = batch(padded([[1, 2, 3], [4]], 3), [3, 1], padded([[2, 3, 4], [5]], 3))
    assert torch.isfinite(model(b))
    assert model.eval().score(b).shape == (2, 31)
