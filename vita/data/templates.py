"""Chat templates: a conversation -> text segments, each marked supervised or not.

Templates are code, not Jinja, so that the supervised span (assistant content and its
end-of-turn token) is known exactly. A template is one :class:`ChatFormat` (a few format
strings); register a new one with ``@TEMPLATES.register(name)``.

VITA's conventions are options: system prompts chosen by modality (image / video / lang),
state prefixes on answers (``☞`` after a spoken query, ``☜`` after a text query, ``☟`` on the
``inserted_id`` negative turn), and ``end_tag=False`` (the last answer has no end token).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from vita.data.schema import ASSISTANT_ROLES, USER_ROLES
from vita.errors import DataError
from vita.registry import TEMPLATES

Segment = tuple[str, bool]  # (text, supervised)

STATE_SPOKEN, STATE_TEXT, STATE_NEGATIVE = "☞", "☜", "☟"

VITA_BASE = (
    "You are an AI robot and your name is VITA. \n- You are a multimodal large language model developed by the "
    "open source community. Your aim is to be helpful, honest and harmless. \n- You support the ability to "
    "communicate fluently and answer user questions in multiple languages of the user's choice. \n- If the user "
    "corrects the wrong answer you generated, you will apologize and discuss the correct answer with the user."
)
_STRICT = (" \n- You must answer the question strictly according to the content of the {a} given by the user, and it "
           "is strictly forbidden to answer the question without the content of the {a}. Please note that you are "
           "seeing the {a}, not the {b}.")
VITA_PROMPTS = {"lang": VITA_BASE, "image": VITA_BASE + _STRICT.format(a="image", b="video"),
                "video": VITA_BASE + _STRICT.format(a="video", b="image")}


def vita_layout(text: str) -> str:
    """VITA's marker layout of a user turn: newlines around ``<image>``/``<video>`` removed, markers
    that end the turn moved to its front, a newline after each visual marker, ``<audio>\n`` ->
    ``<audio>``, and blank lines collapsed."""
    if "<image>" in text or "<video>" in text:
        text = re.sub(r"\n*(<image>|<video>)\n*", r"\1", text)
        tail = re.search(r"(?:<image>|<video>)+$", text)
        if tail and tail.start() > 0:
            text = tail.group(0) + text[:tail.start()]
        text = re.sub(r"(<image>|<video>)", "\\1\n", text)
    text = text.replace("<audio>\n", "<audio>")
    while "\n\n" in text:
        text = text.replace("\n\n", "\n")
    return text


def roles(conversation: list[dict], sample_id: str) -> list[str]:
    """Normalise roles to user/assistant, checking that turns alternate starting with the user."""
    out = []
    for i, turn in enumerate(conversation):
        who = str(turn.get("from", "")).lower()
        want = USER_ROLES if i % 2 == 0 else ASSISTANT_ROLES
        if who not in want:
            raise DataError(
                f"sample '{sample_id}': turn {i} is from '{turn.get('from')}' but turns must alternate "
                "user (human|user) then assistant (gpt|assistant), starting with the user"
            )
        out.append("user" if i % 2 == 0 else "assistant")
    return out


@dataclass(frozen=True)
class ChatFormat:
    """A chat layout given by format strings (``{system}``, ``{text}``)."""

    system_fmt: str = "<|im_start|>system\n{system}<|im_end|>\n"
    """Unsupervised system block; ``""`` folds the system prompt into the first user turn."""
    user_fmt: str = "<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n"
    """Unsupervised: the user turn and the assistant header."""
    end: str = "<|im_end|>"
    """End-of-turn token after each answer (supervised)."""
    between: str = "\n"
    """Unsupervised text after each answer."""
    bos: str = ""
    fold_fmt: str = "{system}\n\n{text}"
    """How the system prompt joins the first user turn when ``system_fmt`` is empty."""
    prompts: dict[str, str] = field(default_factory=lambda: {"lang": "You are a helpful assistant."})
    """System prompt per modality (``lang``, ``image``, ``video``); missing ones fall back to ``lang``."""

    def system_for(self, modality: str) -> str:
        return self.prompts.get(modality, self.prompts.get("lang", ""))

    def render(self, turns: list[tuple[str, str]], *, modality: str = "lang", system: str | None = None,
               state_tokens: bool = False, inserted_id: int | None = None, end_tag: bool = True,
               layout: bool = False) -> list[Segment]:
        """``turns`` = (role, text) pairs, already validated -> segments (``layout``: :func:`vita_layout`)."""
        system = self.system_for(modality) if system is None else system
        segs: list[Segment] = [(self.bos, False)] if self.bos else []
        if system and self.system_fmt:
            segs.append((self.system_fmt.format(system=system), False))
        for i, (role, text) in enumerate(turns):
            if role == "user":
                if layout:
                    text = vita_layout(text)
                if i == 0 and system and not self.system_fmt:
                    text = self.fold_fmt.format(system=system, text=text)
                segs.append((self.user_fmt.format(text=text), False))
                continue
            if state_tokens:
                prefix = STATE_NEGATIVE if i == inserted_id else (
                    STATE_SPOKEN if "<audio>" in turns[i - 1][1] else STATE_TEXT)
                text = prefix + text
            last = i == len(turns) - 1
            segs.append((text + ("" if last and not end_tag else self.end), True))
            if self.between and not last:
                segs.append((self.between, False))
        return segs

    def segments(self, conversation: list[dict], sample_id: str, system: str | None = None) -> list[Segment]:
        """Raw ``[{"from", "value"}]`` turns -> segments (checks the role order)."""
        rs = roles(conversation, sample_id)
        return self.render([(r, str(t.get("value", ""))) for r, t in zip(rs, conversation)], system=system)


ChatML = ChatFormat  # the default ChatFormat is ChatML


@TEMPLATES.register("chatml")
def chatml(system: str | None = None) -> ChatFormat:
    """Plain ChatML with a generic system prompt."""
    return ChatFormat() if system is None else ChatFormat(prompts={"lang": system})


@TEMPLATES.register("qwen2.5")
def qwen25(system: str | None = None) -> ChatFormat:
    """Qwen2.5 ChatML with VITA-1.5's image / video / text system prompts."""
    return ChatFormat(prompts=dict(VITA_PROMPTS) if system is None else {"lang": system})


@TEMPLATES.register("smollm2")
def smollm2(system: str | None = None) -> ChatFormat:
    """SmolLM2-Instruct: ChatML with its own default system prompt."""
    return ChatFormat(prompts={"lang": system or "You are a helpful AI assistant named SmolLM, trained by Hugging Face"})


@TEMPLATES.register("llama3")
def llama3(system: str | None = None) -> ChatFormat:
    """Llama 3 headers; answers end with ``<|eot_id|>``."""
    return ChatFormat(
        bos="<|begin_of_text|>",
        system_fmt="<|start_header_id|>system<|end_header_id|>\n\n{system}<|eot_id|>",
        user_fmt="<|start_header_id|>user<|end_header_id|>\n\n{text}<|eot_id|>"
                 "<|start_header_id|>assistant<|end_header_id|>\n\n",
        end="<|eot_id|>", between="",
        prompts={"lang": system if system is not None else "You are a helpful assistant."},
    )


@TEMPLATES.register("mistral")
def mistral(system: str | None = None) -> ChatFormat:
    """Mistral / Nemo ``[INST]`` turns (VITA's ``nemo``): the system prompt opens the first user turn."""
    return ChatFormat(bos="<s>", system_fmt="", user_fmt="[INST]{text}[/INST]", end="</s>", between="",
                      fold_fmt="{system}\n{text}", prompts=dict(VITA_PROMPTS) if system is None else {"lang": system})


TEMPLATES.register("nemo")(mistral)


@TEMPLATES.register("mixtral")
def mixtral(system: str | None = None) -> ChatFormat:
    """VITA-1.0's ``mixtral_two``: ``system:{SYS}</s>`` then ``\\nuser:{q}</s>\\nbot:{a}</s>``."""
    return ChatFormat(system_fmt="system:{system}</s>", user_fmt="\nuser:{text}</s>\nbot:", end="</s>",
                      between="", prompts=dict(VITA_PROMPTS) if system is None else {"lang": system})
