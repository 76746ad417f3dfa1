"""Chat templates: a conversation -> text segments, each marked supervised or not.

Templates are code, not Jinja, so that the supervised span (assistant content and its
end-of-turn token) is known exactly. Register a new one with ``@TEMPLATES.register(name)``.
"""

from __future__ import annotations

from dataclasses import dataclass

from vita.errors import DataError
from vita.registry import TEMPLATES

USER_ROLES = {"human", "user"}
ASSISTANT_ROLES = {"gpt", "assistant"}

Segment = tuple[str, bool]  # (text, supervised)


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
class ChatML:
    """``<|im_start|>role\\n...<|im_end|>\\n`` turns (Qwen2.5, SmolLM2)."""

    default_system: str = "You are a helpful assistant."
    start: str = "<|im_start|>"
    end: str = "<|im_end|>"

    def segments(self, conversation: list[dict], sample_id: str, system: str | None = None) -> list[Segment]:
        system = self.default_system if system is None else system
        segs: list[Segment] = []
        if system:
            segs.append((f"{self.start}system\n{system}{self.end}\n", False))
        for role, turn in zip(roles(conversation, sample_id), conversation):
            text = str(turn.get("value", ""))
            if role == "user":
                segs.append((f"{self.start}user\n{text}{self.end}\n{self.start}assistant\n", False))
            else:
                segs.append((f"{text}{self.end}", True))
                segs.append(("\n", False))
        return segs


@TEMPLATES.register("chatml")
def chatml(system: str | None = None) -> ChatML:
    """Plain ChatML with a generic system prompt."""
    return ChatML() if system is None else ChatML(default_system=system)
