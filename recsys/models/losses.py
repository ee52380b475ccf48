"""The full-softmax next-item loss every sequence model trains with (SS4Rec, SASRec, GRU4Rec): cross-entropy of
hidden states against the tied item table over the whole catalogue, without ever holding all logits at once."""
from __future__ import annotations

import torch

_CPU_LOGITS_BYTES = 6 * 1024 * 1024   # one CPU chunk of logits stays in the last-level cache (1,024 rows at ML-100K)


def _chunk_rows(chunk: int, n_items: int, device: torch.device) -> int:
    if device.type != "cpu":
        return max(1, chunk)
    return max(1, min(chunk, max(64, _CPU_LOGITS_BYTES // (4 * max(1, n_items)))))


def _lowp_dtype(device: torch.device):
    """The autocast dtype when autocast is on for this device (the logits matmul then runs in it), else None."""
    try:
        if torch.is_autocast_enabled(device.type):
            return torch.get_autocast_dtype(device.type)
    except (TypeError, RuntimeError, AttributeError):  # pragma: no cover - older torch
        pass
    return None


class _FullSoftmaxCE(torch.autograd.Function):
    """sum over rows of -log softmax(h W[1:]^T)[target - 1], never holding more than one chunk of logits.

    Padding (item 0) is left out of the softmax by using W[1:] (a view). Forward: per chunk, logits into one reused
    buffer, their logsumexp kept ([N] floats). Backward: per chunk, logits again, softmax = exp(logits - lse) in
    place, gh = P W and gW += P^T h; the target terms (-W[t] and -h) are applied once for all rows. Logits are
    float32 or wider (matmul in the autocast dtype when autocast is on). Autograd through checkpointed
    F.cross_entropy chunks would write the logits, log-softmax, its gradient and a masked copy instead (timings in
    docs/benchmarks.md).
    """

    @staticmethod
    def _chunks(h, weight, chunk, lowp):
        """(hf, wf, iterator of (start, end, logits chunk)), with autocast off; one reused buffer in full precision."""
        ct = torch.promote_types(torch.promote_types(h.dtype, weight.dtype), torch.float32)
        hf, wf = h.to(ct), weight.to(ct)
        w1 = wf[1:]
        n = hf.shape[0]

        def gen():
            if lowp is None:
                buf = hf.new_empty(min(chunk, n), w1.shape[0])
                for s in range(0, n, chunk):
                    e = min(n, s + chunk)
                    yield s, e, torch.mm(hf[s:e], w1.T, out=buf[:e - s])
            else:
                w1m = w1.to(lowp)
                for s in range(0, n, chunk):
                    e = min(n, s + chunk)
                    yield s, e, torch.mm(hf[s:e].to(lowp), w1m.T).to(ct)

        return hf, wf, gen()

    @staticmethod
    def forward(ctx, h, weight, targets, chunk):
        lowp = _lowp_dtype(h.device)
        with torch.autocast(h.device.type, enabled=False):
            hf, wf, chunks = _FullSoftmaxCE._chunks(h, weight, chunk, lowp)
            lse = hf.new_empty(hf.shape[0])
            for s, e, logits in chunks:
                torch.logsumexp(logits, 1, out=lse[s:e])
            target_logits = (hf * wf.index_select(0, targets)).sum(1)
        ctx.save_for_backward(h, weight, targets, lse)
        ctx.chunk, ctx.lowp = chunk, lowp
        return (lse - target_logits).sum()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        h, weight, targets, lse = ctx.saved_tensors
        with torch.autocast(h.device.type, enabled=False):
            hf, wf, chunks = _FullSoftmaxCE._chunks(h, weight, ctx.chunk, ctx.lowp)
            w1 = wf[1:]
            gh = torch.empty_like(hf)
            gw = torch.zeros_like(wf)
            for s, e, p in chunks:
                p.sub_(lse[s:e, None]).exp_()                      # softmax over items 1..V-1
                torch.mm(p, w1, out=gh[s:e])
                gw[1:].addmm_(p.T, hf[s:e])
            gh.sub_(wf.index_select(0, targets))                   # minus the one-hot target term
            gw.index_add_(0, targets, hf, alpha=-1.0)
            gh.mul_(grad)
            gw.mul_(grad)
        return gh.to(h.dtype), gw.to(weight.dtype), None, None


def chunked_softmax_cross_entropy(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                                  chunk: int = 8192) -> torch.Tensor:
    """Mean full-softmax CE of h [N, d] against the tied item table weight [V, d] (item 0 = padding, never a target),
    without holding [N, V] logits: at most ``chunk`` rows of logits at a time (on the CPU fewer, so that a chunk stays
    in cache), recomputed in the backward.

    Peak memory is about chunk x n_items floats (8192 x 59k floats in fp32 at ML-25M size; lower `chunk` on
    smaller GPUs), whatever the batch and sequence length.
    """
    n = h.shape[0]
    if n == 0:
        return h.sum() * 0.0
    if targets.numel() != n:
        raise ValueError(f"{n} rows but {targets.numel()} targets")
    if bool((targets <= 0).any()) or bool((targets >= weight.shape[0]).any()):
        raise ValueError(f"targets must be item ids in 1..{weight.shape[0] - 1} (0 is padding)")
    rows = _chunk_rows(int(chunk), weight.shape[0], h.device)
    return _FullSoftmaxCE.apply(h, weight, targets, rows) / n


__all__ = ["chunked_softmax_cross_entropy"]
