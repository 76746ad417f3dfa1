"""One inference path for chat, evaluation and in-loop eval.

    from vita.infer import GenerationConfig, Conversation, load_target, chat_reply

    loaded = load_target("outputs/demo/run", [])           # or None + ["model=smol_lm"]
    conv = Conversation()
    conv.add_user("What is in the picture?", image=["cat.png"])
    reply, n = chat_reply(loaded, conv, GenerationConfig(max_new_tokens=64))

* :func:`load_target` (``vita/infer/load.py``): a run dir, an export, a HF folder or a config;
  :data:`TARGET_KINDS` / :func:`register_target` add kinds.
* :func:`build_prompt` / :class:`Conversation` / :func:`collate_prompts` (``prompt.py``): prompts
  through the training ``Processor`` (``prompt_only=True``), left-padded batches.
* :func:`generate` (``generate.py``): greedy / sampling, KV cache, stop sequences, lockstep.
* :func:`speak_rows` (``speak.py``): a model with a speech decoder speaks the answers, streamed in chunks
  (``vita.chat --speak``, ``vita.serve`` audio out, the ``asr_wer`` metrics; docs/SPEECH_INFER.md).
"""

from vita.infer.answer import answer_items, chat_reply, decode
from vita.infer.generate import GenerationConfig, generate, stop_sequences
from vita.infer.load import TARGET_KINDS, Loaded, load_target, register_target, split_target
from vita.infer.prompt import Conversation, build_prompt, collate_prompts, conversation_prompt, split_answer
from vita.infer.speak import SpokenAnswer, speak_rows

__all__ = ["GenerationConfig", "Conversation", "Loaded", "TARGET_KINDS", "answer_items", "build_prompt",
           "chat_reply", "collate_prompts", "conversation_prompt", "decode", "generate", "load_target",
           "register_target", "speak_rows", "split_answer", "split_target", "SpokenAnswer", "stop_sequences"]
