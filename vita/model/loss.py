"""The LM loss: summed token cross-entropy of the LM head, plain or chunked (``engine.fused_loss``).

The plain loss materialises ``[tokens x vocab]`` logits (and their log-softmax and gradient): for
Qwen2.5's 151,936-token vocab at 8,192 tokens that is 4.98 GB per copy in fp32. The chunked loss
(:class:`ChunkedLinearCrossEntropy`) runs the head and the cross-entropy over ``chunk_rows`` tokens
at a time, so at most one chunk of logits (plus its softmax) is alive at any moment; the gradients
are formed chunk by chunk in the same pass (or, with ``recompute``, in backward from recomputed
logits). It returns the same sum (ignored targets
excluded) and the same gradients for hidden states, head weight and bias, to fp32 rounding.

``liger`` uses liger-kernel's fused linear cross-entropy (Triton, GPU) when it is installed.
"""

from __future__ import annotations

import importlib.util
import logging

import torch
import torch.nn.functional as F

from vita.errors import ConfigError

log = logging.getLogger(__name__)
IGNORE_INDEX = -100
CHUNK_ELEMENTS = 1 << 26
"""Logit elements per chunk (256 MB in fp32): ``chunk_rows = max(1, CHUNK_ELEMENTS // vocab)``."""
MODES = ("auto", "chunked", "liger", "off")


def liger_available() -> bool:
    """liger-kernel is importable and a CUDA device is present (its kernels are Triton)."""
    return torch.cuda.is_available() and importlib.util.find_spec("liger_kernel") is not None


def resolve_fused_loss(mode: str, zero_stage: int = 0) -> str:
    """``engine.fused_loss`` -> the loss the model runs: ``chunked``, ``liger`` or ``off``.

    ``auto`` = liger when installed on a GPU (below ZeRO-3), else chunked. Under ZeRO-3 the chunked
    loss reads the head's weight outside the head's own forward; DeepSpeed gathers such a parameter
    on access, and the gradients are formed in the forward, so the weight is needed there only
    (tests/test_train_equivalence.py runs ZeRO-3 at world 1 and 2 with it).
    """
    if mode not in MODES:
        raise ConfigError(f"engine.fused_loss={mode!r}; valid options: {', '.join(MODES)}")
    if mode == "off":
        return "off"
    if zero_stage >= 3 and mode == "liger":
        raise ConfigError("engine.fused_loss=liger under ZeRO-3 is not supported; use chunked (or auto)")
    if mode == "liger" and not liger_available():
        raise ConfigError("engine.fused_loss=liger needs liger-kernel and a CUDA device (`pip install liger-kernel`); "
                          "use engine.fused_loss=chunked on CPU")
    if mode == "auto":
        return "liger" if liger_available() and zero_stage < 3 else "chunked"
    return mode


def _chunks(n: int, rows: int):
    for s in range(0, n, rows):
        yield s, min(n, s + rows)


def _chunk_grads(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, t: torch.Tensor,
                 ignore_index: int, scale) -> tuple[torch.Tensor, torch.Tensor]:
    """One chunk's loss sum and ``d loss / d logits`` (fp32, ``softmax - onehot``, 0 on ignored rows) x scale;
    two chunk-sized buffers at most (the logits are dropped once their log-softmax exists)."""
    logp = torch.log_softmax(F.linear(h, weight, bias).float(), dim=-1)
    valid = t != ignore_index
    safe = torch.where(valid, t, 0).unsqueeze(1)
    loss = -(logp.gather(1, safe).squeeze(1) * valid).sum()
    g = logp.exp_()
    g.scatter_add_(1, safe, -valid.unsqueeze(1).to(g.dtype))
    g.mul_((valid.to(g.dtype) * scale).unsqueeze(1))
    return loss, g


class ChunkedLinearCrossEntropy(torch.autograd.Function):
    """``sum_i CE(hidden_i @ weight.T + bias, target_i)`` over targets != ignore_index, in row chunks.

    No ``[N, V]`` tensor is ever made: each chunk's logits live only while that chunk is processed.
    By default the gradients (``softmax - onehot`` through the head) are formed in the same pass
    as the loss, chunk by chunk, and backward only scales them: three head matmuls in all, as the
    plain loss. With ``recompute`` forward keeps nothing but its inputs and backward recomputes each
    chunk's logits (a fourth head matmul; for a forward whose backward may never run). Gradients
    accumulate in fp32 for the weight and bias.
    """

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, target: torch.Tensor,
                chunk_rows: int, ignore_index: int, recompute: bool) -> torch.Tensor:
        ctx.chunk_rows, ctx.ignore_index, ctx.recompute = chunk_rows, ignore_index, recompute
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        if recompute or not any(ctx.needs_input_grad[:3]):
            for s, e in _chunks(hidden.shape[0], chunk_rows):
                logits = F.linear(hidden[s:e], weight, bias).float()
                total += F.cross_entropy(logits, target[s:e], ignore_index=ignore_index, reduction="sum")
            ctx.save_for_backward(hidden, weight, bias, target)
            ctx.recompute = True
            return total
        grads = ChunkedLinearCrossEntropy._grads(ctx.needs_input_grad, hidden, weight, bias, target, chunk_rows,
                                                 ignore_index, 1.0, total)
        ctx.grads = grads  # intermediates (not inputs or outputs): kept on ctx, scaled once in backward
        return total

    @staticmethod
    def _grads(needs, hidden, weight, bias, target, chunk_rows, ignore_index, scale, total=None):
        need_h, need_w, need_b = needs[:3]
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        grad_b = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) if need_b and bias is not None else None
        for s, e in _chunks(hidden.shape[0], chunk_rows):
            h = hidden[s:e]
            loss, g = _chunk_grads(h, weight, bias, target[s:e], ignore_index, scale)
            if total is not None:
                total += loss
            gd = g.to(hidden.dtype)
            if grad_h is not None:
                grad_h[s:e] = gd @ weight
            if grad_w is not None:
                grad_w += (gd.t() @ h).float()
            if grad_b is not None:
                grad_b += g.sum(0)
            del g, gd  # free this chunk's buffer before the next chunk's logits exist
        return (grad_h, grad_w.to(weight.dtype) if grad_w is not None else None,
                grad_b.to(bias.dtype) if grad_b is not None else None)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        if ctx.recompute:
            hidden, weight, bias, target = ctx.saved_tensors
            grads = ChunkedLinearCrossEntropy._grads(ctx.needs_input_grad, hidden, weight, bias, target,
                                                     ctx.chunk_rows, ctx.ignore_index, grad_out)
        else:
            grads, ctx.grads = ctx.grads, None
            grads = [g.mul_(grad_out.to(g.dtype)) if g is not None else None for g in grads]
        return (*grads, None, None, None, None)


def chunked_linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                                 target: torch.Tensor, ignore_index: int = IGNORE_INDEX,
                                 chunk_rows: int | None = None, recompute: bool = False) -> torch.Tensor:
    """Summed cross-entropy of ``hidden [N, H] -> logits [N, V]`` against ``target [N]``, chunked
    (see :class:`ChunkedLinearCrossEntropy`)."""
    rows = chunk_rows or max(1, CHUNK_ELEMENTS // weight.shape[0])
    return ChunkedLinearCrossEntropy.apply(hidden, weight, bias, target, rows, ignore_index, recompute)


def lm_loss_sum(hidden: torch.Tensor, head: torch.nn.Module, target: torch.Tensor, mode: str,
                ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Summed token cross-entropy of ``head(hidden)`` (hidden [N, H], target [N]) by ``mode``
    (``chunked``, ``liger`` or ``off`` = plain logits); fp32."""
    if mode != "off" and not fusable_head(head):  # e.g. LoRA on the head: its output is not F.linear(x, weight, bias)
        if not getattr(lm_loss_sum, "_warned", False):
            log.warning("engine.fused_loss=%s: the LM head is a %s, not a plain nn.Linear; using the plain loss",
                        mode, type(head).__name__)
            lm_loss_sum._warned = True
        mode = "off"
    if mode == "off":
        return F.cross_entropy(head(hidden).float(), target, ignore_index=ignore_index, reduction="sum")
    if mode == "liger":
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

        return LigerFusedLinearCrossEntropyLoss(ignore_index=ignore_index, reduction="sum")(
            head.weight, hidden, target, head.bias).float()
    return chunked_linear_cross_entropy(hidden, head.weight, head.bias, target, ignore_index)


def fusable_head(head: torch.nn.Module) -> bool:
    """The head's output is exactly ``F.linear(x, head.weight, head.bias)`` (a LoRA-wrapped head is not)."""
    return type(head) is torch.nn.Linear
