"""Build the demo tokenizer shipped in ``vita/assets/tokenizers/chatterbot-bpe``.

A byte-level BPE (1,024 entries) trained on the chatterbot English corpus, with ChatML
special tokens and one placeholder token per modality. It is a real Hugging Face tokenizer
(``AutoTokenizer.from_pretrained`` loads it), small enough to ship and to train a tiny model
on CPU. Rebuild with ``python -m vita.data.demo_tokenizer``.
"""

from __future__ import annotations

from pathlib import Path

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<|audio_pad|>",
]
ASSET = Path(__file__).resolve().parents[1] / "assets" / "tokenizers" / "chatterbot-bpe"


def build(out: Path = ASSET, vocab_size: int = 1024) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from vita.data.chatterbot import load_conversations

    texts = [t["value"] for s in load_conversations() for t in s["conversations"]]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    fast.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS[1:]})
    out.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(out)
    (out / "README.md").write_text(
        "Byte-level BPE trained on the chatterbot-corpus English conversations "
        "(python -m vita.data.demo_tokenizer). For the tiny demo model only.\n"
    )
    return out


if __name__ == "__main__":
    print(build())
