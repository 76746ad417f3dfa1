"""Media placeholder tokens: one special token per modality, expanded by the data pipeline."""

from __future__ import annotations

from vita.spec import AUDIO_TOKEN, IMAGE_TOKEN, VIDEO_TOKEN

MEDIA_TOKENS = (IMAGE_TOKEN, VIDEO_TOKEN, AUDIO_TOKEN)


def ensure_media_tokens(tokenizer, model=None) -> dict[str, int]:
    """Make sure ``tokenizer`` has the three placeholder tokens; tell ``model`` their ids.

    Tokens the tokenizer lacks are added as special tokens; if that makes the tokenizer larger
    than the LLM's embedding table, the embeddings are resized. Returns ``{token: id}``.

    Args:
        tokenizer: a Hugging Face tokenizer.
        model: an :class:`~vita.model.omni.OmniModel` (or None to only fix the tokenizer).
    """
    vocab = tokenizer.get_vocab()
    missing = [t for t in MEDIA_TOKENS if t not in vocab]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in MEDIA_TOKENS}
    if model is not None:
        emb = model.llm.get_input_embeddings()
        if len(tokenizer) > emb.num_embeddings:
            model.llm.resize_token_embeddings(len(tokenizer))
        model.set_media_token_ids(image=ids[IMAGE_TOKEN], video=ids[VIDEO_TOKEN], audio=ids[AUDIO_TOKEN])
    return ids


def load_tokenizer(model_cfg, path: str | None = None):
    """The tokenizer of ``cfg.model`` (``model.tokenizer``, else ``model.pretrained`` with its GGUF file),
    or the one saved in ``path`` (an export folder) when given."""
    from transformers import AutoTokenizer

    kw = {"trust_remote_code": True} if model_cfg.trust_remote_code else {}
    if path is not None:
        return AutoTokenizer.from_pretrained(path, **kw)
    from vita.model.gguf_cache import tokenizer_path

    return AutoTokenizer.from_pretrained(tokenizer_path(model_cfg), **kw)  # a GGUF's via its cached HF folder
