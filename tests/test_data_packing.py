"""Packing: position ids restart per sample, and a packed row's loss equals the sum of its
samples' losses computed one by one on the tiny model (attention stays inside each sample)."""

from __future__ import annotations

import pytest
import torch

from vita.data.collate import Collator
from vita.data.packing import pack_rows, position_ids_for
from vita.model.omni import IGNORE_INDEX, OmniModel


def tiny_model() -> OmniModel:
    from transformers import AutoModelForCausalLM

    import vita.model.backbones  # noqa: F401
    from vita.registry import BACKBONES

    torch.manual_seed(0)
    cfg = BACKBONES.build("tiny-qwen2", vocab_size=64)
    cfg._attn_implementation = "sdpa"
    return OmniModel(AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa")).eval()


def items():
    g = torch.Generator().manual_seed(1)
    out = []
    for k, n in enumerate((7, 5, 9, 4)):
        ids = torch.randint(1, 64, (n,), generator=g).tolist()
        labels = [IGNORE_INDEX] * 2 + ids[2:]
        out.append({"id": f"s{k}", "input_ids": ids, "labels": labels})
    return out


def summed_per_sample(run, items) -> tuple[float, int, dict]:
    """``run`` (a micro-batch -> loss sum, label tokens, gradients) over each item alone, summed: what one packed
    micro-batch of the same items must give."""
    want_ce, want_n, want_g = 0.0, 0, {}
    for it in items:
        ce, n, g = run(Collator(0)([it]))
        want_ce, want_n = want_ce + ce, want_n + n
        for k, v in g.items():
            want_g[k] = want_g[k] + v if k in want_g else v
    return want_ce, want_n, want_g


def test_pack_rows_first_fit():
    """First fit keeps order and never exceeds the row length."""
    assert pack_rows([7, 5, 9, 4], 16) == [[0, 1, 3], [2]]
    assert position_ids_for([3, 2], 7) == [0, 1, 2, 0, 1, 0, 1]


def test_packed_loss_equals_sum_of_separate_losses():
    """ce_sum of the packed batch == sum over samples of ce_sum alone (within 1e-4); the same
    number of supervised tokens; a cross-sample attention leak would change the sum."""
    model = tiny_model()
    its = items()
    packed = Collator(0, packing=True, max_length=16)(its)
    assert packed["input_ids"].shape == (2, 16)
    assert packed["position_ids"][0].tolist() == list(range(7)) + list(range(5)) + list(range(4))
    with torch.no_grad():
        got = model(packed["input_ids"], packed["labels"], packed["attention_mask"], packed["position_ids"])
        want, n = 0.0, 0
        for it in its:
            one = Collator(0)([it])
            out = model(one["input_ids"], one["labels"], one["attention_mask"])
            want += float(out["ce_sum"])
            n += int(out["num_tokens"])
        leak = model(packed["input_ids"], packed["labels"], packed["attention_mask"])  # no position ids: one long sequence
    assert int(got["num_tokens"]) == n
    assert abs(float(got["ce_sum"]) - want) < 1e-4 * max(1.0, want)
    assert abs(float(leak["ce_sum"]) - want) > 1e-3


def test_packed_first_label_masked():
    """A sample's first token is never a target inside a packed row (as when it starts its own row)."""
    packed = Collator(0, packing=True, max_length=32)([{"id": "a", "input_ids": [1, 2], "labels": [1, 2]},
                                                       {"id": "b", "input_ids": [3, 4], "labels": [3, 4]}])
    assert packed["labels"].tolist() == [[IGNORE_INDEX, 2, IGNORE_INDEX, 4]]


def test_packing_across_the_batch_fills_rows_deterministically():
    """token_budget + packing: rows of max_length filled first-fit-decreasing from the whole window, which the
    collator's first fit rebuilds as consecutive runs (<= token_budget // max_length rows per micro-batch);
    every sample once; the same plan for a seed, another for another seed; the VITA-like mixture >= 0.995 non-pad."""

    from vita.bench.data import vita_like_lengths
    from vita.data.samplers import TokenBudgetSampler

    ls, mm = vita_like_lengths(3000, max_length=6200)
    kw = dict(num_samples=3000, global_batch_size=8, micro_per_step=2, lengths=ls, modalities=mm,
              token_budget=4 * 6200, packing=True, max_length=6200, pack_window=512)
    s = TokenBudgetSampler(seed=0, **kw)
    assert sorted(i for mb in s.plan for i in mb) == list(range(3000))
    real = padded = 0
    for mb in s.plan:
        rows = pack_rows(ls[mb].tolist(), 6200)
        assert len(rows) <= 4 and [k for r in rows for k in r] == list(range(len(mb)))  # consecutive runs
        real += int(ls[mb].sum())
        padded += len(rows) * max(int(ls[mb][r].sum()) for r in rows)
    assert real / padded >= 0.995, real / padded
    assert TokenBudgetSampler(seed=0, **kw).plan == s.plan
    assert TokenBudgetSampler(seed=1, **kw).plan != s.plan
    assert s.micro_batches(1, 3) == TokenBudgetSampler(seed=0, **kw).micro_batches(1, 3) != s.micro_batches(0, 3)


def test_packed_mixed_media_loss_and_grads_equal_per_sample():
    """tiny_omni on real demo samples (image tiles, video frames, audio, text, image + audio) packed across
    the batch into rows: ce_sum, token count and every gradient equal the sums over the samples run one by
    one (fp32, 1e-5); placeholders and media stay with their samples."""
    from tests.data_fixtures import omni_demo, samples_by_kind
    from vita.data.packing import pack_ffd

    _, _, model, data = omni_demo()
    model.eval()  # no dropout: the packed and the single runs must be the same function
    items = list(samples_by_kind(data.dataset, ("image", "video", "audio", "text", "image+audio")).values())
    lens = [len(it["input_ids"]) for it in items]
    row = max(lens) + min(lens) + 1  # at least one row holds two samples
    rows = pack_ffd(list(range(len(items))), lens, row)
    assert len(rows) < len(items)
    ordered = [items[i] for r in rows for i in r]
    packed = Collator(0, packing=True, max_length=row)(ordered)
    assert packed["input_ids"].shape[0] == len(rows)
    assert {"pixel_values", "audio_features"} <= set(packed)

    def run(mb):
        model.zero_grad(set_to_none=True)
        out = model(**{k: v for k, v in mb.items() if isinstance(v, torch.Tensor)}, host_batch=mb)
        (out["ce_sum"] / 100.0).backward()
        return float(out["ce_sum"].detach()), int(out["num_tokens"]), {
            n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    got_ce, got_n, got_g = run(packed)
    want_ce, want_n, want_g = summed_per_sample(run, items)
    assert got_n == want_n
    assert abs(got_ce - want_ce) <= 1e-5 * abs(want_ce), (got_ce, want_ce)
    for k, v in want_g.items():
        g = got_g.get(k, torch.zeros_like(v))
        assert torch.allclose(g, v, rtol=1e-5, atol=1e-6), (k, (g - v).abs().max())


@pytest.mark.parametrize("encoder,projector", [("tiny-vita", "subsampling"), ("tiny-whisper", "mlp2x_gelu")])
def test_audio_clip_encodes_the_same_alone_or_batched(encoder, projector):
    """A clip's features in a padded batch of clips equal the clip's own (the padding after it is never seen),
    which packing several audio samples into one micro-batch relies on."""
    from omegaconf import OmegaConf

    from vita.config import ModelConfig
    from vita.model import build_model

    torch.manual_seed(0)
    cfg = OmegaConf.structured(ModelConfig(backbone="tiny-qwen2"))
    cfg.audio.encoder, cfg.audio.projector = encoder, projector
    m = build_model(cfg, vocab_size=1024).eval()
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(120, 80, generator=g), torch.randn(77, 80, generator=g)
    batch = torch.zeros(2, 120, 80)
    batch[0], batch[1, :77] = a, b
    with torch.no_grad():
        both, counts = m.encode_audio(batch, torch.tensor([120, 77]))
        alone, (n,) = m.encode_audio(b[None], torch.tensor([77]))
    assert counts[1] == n
    assert torch.allclose(both[1, :n], alone[0, :n], atol=1e-5), (both[1, :n] - alone[0, :n]).abs().max()
