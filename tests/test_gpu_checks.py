"""GPU checks (``-m gpu``): what only a GPU can tell about vita, on the tiny models, in about a minute.

bf16 vs fp32 forward and backward; packed rows == their samples one by one through the GPU attention
path (sdpa, and flash-attn when installed); single-GPU ZeRO-2 and ZeRO-3 training steps (``vita.run``,
DeepSpeed's GPU optimizer); the chunked loss against the plain one; generation with the KV cache
against recomputing the sequence. Their CPU counterparts are tests/test_omni.py, test_data_packing.py,
test_train_equivalence.py, test_fused_loss.py and test_infer_generate.py; these reuse their models
and batches and check the same identities on the device.

Skipped without CUDA (``make test`` here); ``launch/device/run.sh`` runs them on a lent GPU. Its CPU
smoke mode (``VITA_DEVICE_SMOKE=1``) runs them on the CPU instead, to check the kit end to end: the
identities hold there too, only the GPU kernels are not exercised.
"""

from __future__ import annotations

import copy
import importlib.util
import math
import os

import pytest
import torch

from tests.conftest import find_run, losses, run_vita, vita_env

CUDA = torch.cuda.is_available()
SMOKE = os.environ.get("VITA_DEVICE_SMOKE") == "1"
DEVICE = torch.device("cuda" if CUDA else "cpu")
FLASH = CUDA and importlib.util.find_spec("flash_attn") is not None

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not (CUDA or SMOKE), reason="needs a CUDA device (or VITA_DEVICE_SMOKE=1 on CPU)")]


def _to(batch: dict, dtype: torch.dtype) -> dict:
    """The batch's tensors on the device, floating ones (media) in the model's dtype."""
    return {k: (v.to(DEVICE, dtype) if v.is_floating_point() else v.to(DEVICE))
            for k, v in batch.items() if isinstance(v, torch.Tensor)}


def _loss_and_grads(model, batch: dict) -> tuple[float, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    out = model(**batch)
    loss = out["ce_sum"] / out["num_tokens"]
    loss.backward()
    return float(loss.detach()), {n: p.grad.detach().float().flatten() for n, p in model.named_parameters()
                                  if p.grad is not None}


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0))


def test_bf16_forward_backward_matches_fp32():
    """tiny_omni (Qwen2 + InternViT + VITA audio encoder) with image tiles and audio clips: the bf16 copy's image
    and audio features are within 2% of fp32's (relative norm), its loss within 2%, its gradient points the same
    way (cosine > 0.999 over all parameters, > 0.99 for every module group; 0.9999 on CPU); a wrong cast, a bf16
    accumulation or a dropped scale moves these far more. Eval mode: dropout would make them two functions."""
    from tests.test_omni import batch, make

    m32 = make().to(DEVICE).eval()  # no dropout: both copies must compute the same function
    b = batch(m32, tiles=(2, 1), clips=((77,), (40,)))
    m16 = copy.deepcopy(m32).to(torch.bfloat16)
    b32, b16 = _to(b, torch.float32), _to(b, torch.bfloat16)
    with torch.no_grad():
        for name, (f32, f16) in {
                "image": (m32.encode_images(b32["pixel_values"]), m16.encode_images(b16["pixel_values"])),
                "audio": (m32.encode_audio(b32["audio_features"], b32["audio_lengths"])[0],
                          m16.encode_audio(b16["audio_features"], b16["audio_lengths"])[0])}.items():
            err = float((f16.float() - f32).norm() / f32.norm())
            assert err < 0.02, (name, err)
    l32, g32 = _loss_and_grads(m32, _to(b, torch.float32))
    l16, g16 = _loss_and_grads(m16, _to(b, torch.bfloat16))
    assert math.isfinite(l16) and abs(l16 - l32) <= 0.02 * abs(l32), (l16, l32)
    assert set(g16) == set(g32)
    names = sorted(g32)
    assert _cos(torch.cat([g16[n] for n in names]), torch.cat([g32[n] for n in names])) > 0.999
    for group, module in m32.module_groups().items():
        own = [n for n, _ in module.named_parameters(prefix=_prefix(m32, module)) if n in g32]
        if own:
            c = _cos(torch.cat([g16[n] for n in own]), torch.cat([g32[n] for n in own]))
            assert c > 0.99, (group, c)


def _prefix(model, module) -> str:
    return next(n for n, mod in model.named_modules() if mod is module)


ATTN = ["sdpa"] + (["flash_attention_2"] if FLASH else [])


@pytest.mark.parametrize("attn", ATTN)
def test_packed_rows_equal_their_samples_with_the_device_attention(attn):
    """Four samples packed into two rows: the summed loss and every gradient equal the samples run one by one
    (sdpa's block-diagonal mask in fp32 within 1e-4; flash-attn's varlen path in bf16 within 2%); without
    position ids (one long sequence, attention leaking across samples) the loss differs."""
    from transformers import AutoModelForCausalLM

    import vita.model.backbones  # noqa: F401
    from tests.test_data_packing import items, summed_per_sample
    from vita.data.collate import Collator
    from vita.model.omni import OmniModel
    from vita.registry import BACKBONES

    dtype = torch.bfloat16 if attn == "flash_attention_2" else torch.float32
    tol = 2e-2 if dtype == torch.bfloat16 else 1e-4
    torch.manual_seed(0)
    cfg = BACKBONES.build("tiny-qwen2", vocab_size=64)
    model = OmniModel(AutoModelForCausalLM.from_config(cfg, attn_implementation=attn, dtype=dtype)).to(DEVICE).eval()
    its = items()

    def run(mb):
        model.zero_grad(set_to_none=True)
        out = model(**_to(mb, dtype))
        out["ce_sum"].backward()
        return float(out["ce_sum"].detach()), int(out["num_tokens"]), {
            n: p.grad.detach().float().clone() for n, p in model.named_parameters() if p.grad is not None}

    packed = Collator(0, packing=True, max_length=16)(its)
    assert packed["input_ids"].shape == (2, 16)
    got_ce, got_n, got_g = run(packed)
    want_ce, want_n, want_g = summed_per_sample(run, its)
    assert got_n == want_n
    assert abs(got_ce - want_ce) <= tol * abs(want_ce), (got_ce, want_ce)
    for k, v in want_g.items():
        scale = float(v.abs().max()) or 1.0
        assert float((got_g[k] - v).abs().max()) <= tol * 10 * scale, (k, float((got_g[k] - v).abs().max()), scale)
    leak = dict(packed)
    leak.pop("position_ids")
    with torch.no_grad():
        leaked = float(model(**_to(leak, dtype))["ce_sum"])
    assert abs(leaked - want_ce) > 10 * tol * abs(want_ce), (leaked, want_ce)


@pytest.fixture(scope="module")
def zero_runs(tmp_path_factory) -> dict[int, list[float]]:
    """ZeRO-2 and ZeRO-3, one ``vita.run`` each: tiny Qwen2 + tiny InternViT on the benchmark's synthetic
    image/text set (vita/bench/gpu.py, the same overrides), 6 steps, bf16 on a GPU (fp32 in the CPU smoke mode),
    the optimizer the kit could build (``VITA_DEVICE_OPTIMIZER_IMPL``: DeepSpeed's fused Adam, else torch's)."""
    from vita.bench.gpu import overrides, parse_args, write_dataset

    root = tmp_path_factory.mktemp("zero")
    data = write_dataset(root / "data", 24, seed=3, max_words=60)
    a = parse_args(["--smoke", "--max-length", "512",
                    "--optimizer-impl", os.environ.get("VITA_DEVICE_OPTIMIZER_IMPL", "auto")])
    a.steps = 6
    env = vita_env(OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    out = {}
    for zero in (2, 3):
        args = overrides(a, data, root, packing=False, zero=zero, precision="bf16" if CUDA else "fp32",
                         name=f"zero{zero}")
        run_vita([*args, "train.ckpt_every=0", "optim.lr=1e-3"], timeout=900, env=env)
        out[zero] = losses(find_run(root, f"zero{zero}"))
    return out


def test_zero2_and_zero3_single_gpu_steps(zero_runs):
    """Both stages train 6 steps with finite losses and follow one trajectory: step 1 (the same weights and batch)
    within 1e-2 (bf16) / 1e-5 (fp32), every later step within 5e-2 / 1e-4; the loss falls."""
    tight, loose = (1e-2, 5e-2) if CUDA else (1e-5, 1e-4)
    z2, z3 = zero_runs[2], zero_runs[3]
    assert len(z2) == len(z3) == 6 and all(math.isfinite(x) for x in z2 + z3), zero_runs
    assert abs(z2[0] - z3[0]) <= tight * abs(z2[0]), zero_runs
    assert all(abs(a - b) <= loose * abs(a) for a, b in zip(z2, z3)), zero_runs
    assert z2[-1] < z2[0] and z3[-1] < z3[0], zero_runs


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_chunked_loss_matches_plain_on_the_device(dtype, monkeypatch):
    """tiny Qwen2 with engine.fused_loss=chunked (chunks of 7 rows) vs off on the device: the loss sum and every
    gradient agree (fp32 within 1e-4 of the largest gradient; bf16 within 2%: both round the same logits)."""
    import vita.model.loss as loss_mod
    from tests.test_fused_loss import _batch, _model

    monkeypatch.setattr(loss_mod, "CHUNK_ELEMENTS", 7 * 1024)
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    m = _model("tiny-qwen2").to(DEVICE, dtype)
    b = _to(_batch(state=False), dtype)
    res = {}
    for mode in ("off", "chunked"):
        m.zero_grad(set_to_none=True)
        m.fused_loss = mode
        out = m(**b)
        out["ce_sum"].backward()
        res[mode] = (float(out["ce_sum"].detach()), {n: p.grad.detach().float().clone()
                                                     for n, p in m.named_parameters() if p.grad is not None})
    (p_ce, p_g), (c_ce, c_g) = res["off"], res["chunked"]
    assert abs(c_ce - p_ce) <= tol * abs(p_ce), (c_ce, p_ce)
    assert set(p_g) == set(c_g)
    for n, g in p_g.items():
        scale = float(g.abs().max()) or 1.0
        assert float((c_g[n] - g).abs().max()) <= tol * scale * (10 if dtype == torch.bfloat16 else 1), n


def test_kv_cache_generation_equals_recompute():
    """Greedy generation on the device (tiny_omni, an image prompt and a text prompt, left-padded): the KV-cache
    loop gives the tokens of recomputing the whole sequence each step, and the batch those of each prompt alone."""
    from tests.test_omni import IMG, make
    from vita.infer import GenerationConfig, collate_prompts, generate

    m = make(audio=None).to(DEVICE).eval()
    g = torch.Generator().manual_seed(5)
    t = m.tokens_per_tile
    img = {"id": "img", "input_ids": [5, 6] + [IMG] * t + torch.randint(10, 900, (7,), generator=g).tolist(),
           "pixel_values": torch.randn(1, 3, 56, 56, generator=g)}
    txt = {"id": "txt", "input_ids": torch.randint(10, 900, (4,), generator=g).tolist()}
    for it in (img, txt):
        it["labels"] = [-100] * len(it["input_ids"])
    gen = GenerationConfig(max_new_tokens=12)
    batch = collate_prompts([img, txt], pad_id=0)
    assert batch["attention_mask"][1, 0] == 0  # the text prompt is left-padded
    cached = generate(m, batch, gen, [], 0)
    plain = generate(m, batch, GenerationConfig(max_new_tokens=12, use_cache=False), [], 0)
    single = [generate(m, collate_prompts([it], pad_id=0), gen, [], 0)[0] for it in (img, txt)]
    assert cached == plain == single, (cached, plain, single)
    assert all(len(r) == 12 for r in cached)
