"""Packing: position ids restart per sample, and a packed row's loss equals the sum of its
samples' losses computed one by one on the tiny model (attention stays inside each sample)."""

from __future__ import annotations

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
