"""speechllm.train.fused: the training step's hand-written attention and loss give what
transformers' eager attention and ``F.cross_entropy`` give (fp32 to rounding, bf16 within bf16
rounding), alone and through a whole tiny training step."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from train_fixtures import tiny_run_config, write_rows

from speechllm.train.fused import cross_entropy_sum, train_attention


class _Module(torch.nn.Module):  # what the attention functions read from the attention layer
    def __init__(self, groups: int):
        super().__init__()
        self.num_key_value_groups = groups
        self.training = True


def _inputs(dtype, *, batch=3, heads=6, kv_heads=2, length=11, prefix=4, dim=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, length, dim, generator=g).to(dtype).requires_grad_()
    k = torch.randn(batch, kv_heads, prefix + length, dim, generator=g).to(dtype).requires_grad_()
    v = torch.randn(batch, kv_heads, prefix + length, dim, generator=g).to(dtype).requires_grad_()
    # Left padding (rows start at columns 0, 2, 5 after a shared prefix), causal: eager's additive mask.
    cols = torch.arange(prefix + length)
    rows = prefix + torch.arange(length)
    starts = torch.tensor([0, 2, 5])
    keep = (cols[None, None, :] <= rows[None, :, None]) & ((cols < prefix)[None, None, :]
                                                             | (cols[None, None, :] >= prefix + starts[:, None, None]))
    mask = torch.where(keep, 0.0, torch.finfo(dtype).min).to(dtype)[:, None]
    return q, k, v, mask, starts


def _attend(fn, q, k, v, mask, groups):
    out, _ = fn(_Module(groups), q, k, v, mask, scaling=q.shape[-1] ** -0.5, dropout=0.0)
    return out


def _run(fn, dtype, seed=0):
    from transformers.models.llama.modeling_llama import eager_attention_forward  # noqa: F401

    q, k, v, mask, starts = _inputs(dtype, seed=seed)
    out = _attend(fn, q, k, v, mask, q.shape[1] // k.shape[1])
    weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed + 1)).to(dtype)
    # Only real query rows count (a padded row's output is never read).
    real = (torch.arange(out.shape[1])[None, :] >= starts[:, None])[:, :, None, None]
    (out.float() * weight.float() * real).sum().backward()
    return [(t * real).detach().float() if t is out else t.float() for t in (out, q.grad, k.grad, v.grad)]


def test_attention_equals_eager_fp32_and_within_bf16_rounding():
    from transformers.models.llama.modeling_llama import eager_attention_forward

    ref = _run(eager_attention_forward, torch.float32)
    ours = _run(train_attention, torch.float32)
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    # bf16: our error against the fp32 result is at most a little over eager's own bf16 error.
    eager16 = _run(eager_attention_forward, torch.bfloat16)
    ours16 = _run(train_attention, torch.bfloat16)
    for a, e, r in zip(ours16, eager16, ref, strict=True):
        assert float((a - r).abs().max()) <= 2.0 * float((e - r).abs().max()) + 1e-3


def test_attention_falls_back_to_eager_for_what_it_does_not_cover():
    from transformers.models.llama.modeling_llama import eager_attention_forward

    q, k, v, mask, _ = _inputs(torch.float32)
    m = _Module(3)
    out, weights = train_attention(m, q, k, v, mask, scaling=0.25, dropout=0.0, sliding_window=4)
    ref, ref_weights = eager_attention_forward(m, q, k, v, mask, scaling=0.25, dropout=0.0)
    assert weights is not None and torch.equal(out, ref) and torch.equal(weights, ref_weights)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cross_entropy_sum_equals_torch(dtype):
    g = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(70, 300, generator=g)).to(dtype).requires_grad_()
    targets = torch.randint(0, 300, (70,), generator=g)
    ours = cross_entropy_sum(logits, targets, chunk=16)
    ours.backward()
    grad = logits.grad.clone()
    logits.grad = None
    ref = F.cross_entropy(logits.float(), targets, reduction="sum")
    ref.backward()
    assert grad.dtype == dtype
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-6)
    # The same fp32 gradient rounded once to the logits' dtype: equal up to one rounding step.
    torch.testing.assert_close(grad.float(), logits.grad.float(), atol=1e-6, rtol=1e-5 if dtype == torch.float32 else 8e-3)
    empty = cross_entropy_sum(logits[:0], targets[:0])
    assert float(empty) == 0.0 and empty.requires_grad


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_training_step_with_fused_attention_equals_eager(tiny_llm_dir, tiny_whisper_dir, tmp_path, precision):
    """A whole tiny step (shared-prefix KV on, rows of different lengths): loss and the adapter's
    gradients with ``train.attention: fused`` equal those with transformers' eager attention."""
    from speechllm.train import Trainer

    rows = write_rows(tmp_path, 6)
    losses, grads = [], []
    for attention in ("eager", "fused"):
        cfg = tiny_run_config(tiny_llm_dir, tiny_whisper_dir, [rows], tmp_path / attention, attention=attention,
                              precision=precision)
        cfg.model.adapter_dropout = 0.0
        cfg.model.dtype = precision
        torch.manual_seed(0)
        trainer = Trainer(cfg)
        impl = trainer.model.base_causal_lm().config._attn_implementation
        assert impl == ("eager" if attention == "eager" else "speechllm_train")
        items = [trainer.dataset[i] for i in range(4)]
        losses.append(trainer.accumulate_gradients([items]).losses["ce"])
        grads.append(torch.cat([p.grad.flatten().float() for p in trainer.trainable]))
    if precision == "fp32":
        assert losses[1] == pytest.approx(losses[0], rel=1e-6)
        torch.testing.assert_close(grads[1], grads[0], atol=1e-7, rtol=1e-4)
    else:  # the forward is eager's bit for bit (power-of-two scale); the backward's roundings differ
        assert losses[1] == pytest.approx(losses[0], rel=1e-6)
        cos = F.cosine_similarity(grads[0], grads[1], dim=0)
        assert float(cos) > 0.9999
        assert float((grads[1] - grads[0]).norm() / grads[0].norm()) < 0.01


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_rms_norm_equals_transformers(dtype):
    """Forward bit for bit; input gradient equal up to one rounding step of the dtype; a norm
    whose weight trains keeps transformers' forward (its weight gradient is not written out)."""
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    from speechllm.train.fused import fuse_rms_norms

    g = torch.Generator().manual_seed(0)
    ref = LlamaRMSNorm(48, eps=1e-5).to(dtype).requires_grad_(False)
    with torch.no_grad():
        ref.weight.copy_(torch.randn(48, generator=g))
    ours = LlamaRMSNorm(48, eps=1e-5).to(dtype).requires_grad_(False)
    ours.load_state_dict(ref.state_dict())
    assert fuse_rms_norms(torch.nn.Sequential(ours)) == 1
    x = (3 * torch.randn(4, 7, 48, generator=g)).to(dtype)
    grad = torch.randn(4, 7, 48, generator=g).to(dtype)
    xr, xo = x.clone().requires_grad_(), x.clone().requires_grad_()
    yr, yo = ref(xr), ours(xo)
    assert torch.equal(yr, yo)
    yr.backward(grad)
    yo.backward(grad)
    assert xo.grad.dtype == dtype
    tol = 1e-6 if dtype == torch.float32 else 2 ** -7  # bf16: 8 bits of mantissa
    torch.testing.assert_close(xo.grad.float(), xr.grad.float(), atol=tol * float(xr.grad.abs().max()), rtol=0)
    ours.weight.requires_grad_(True)
    ours(x).sum().backward()
    assert ours.weight.grad is not None
