"""Registries: string keys -> factory functions, one registry per component kind.

A registry is a dict plus a decorator::

    from vita.registry import BACKBONES

    @BACKBONES.register("tiny-qwen2")
    def tiny_qwen2(**overrides):
        ...

    model = BACKBONES.build("tiny-qwen2", hidden_size=128)

Registering the same name twice is an error; asking for an unknown name raises a
:class:`RegistryError` that lists the known keys and the closest matches.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from vita.errors import ConfigError

F = TypeVar("F", bound=Callable[..., Any])


class RegistryError(ConfigError, KeyError):
    """An unknown or duplicate registry key."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class Registry:
    """A named mapping from string keys to factory functions."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Callable[..., Any]] = {}

    def register(self, name: str) -> Callable[[F], F]:
        """Decorator that registers a factory under ``name``."""

        def deco(fn: F) -> F:
            if name in self._entries:
                raise RegistryError(
                    f"{self.kind} '{name}' is already registered "
                    f"(by {self._entries[name].__module__}.{self._entries[name].__qualname__}); "
                    "pick another name"
                )
            self._entries[name] = fn
            return fn

        return deco

    def get(self, name: str) -> Callable[..., Any]:
        """Return the factory for ``name``; an unknown name lists the valid ones."""
        try:
            return self._entries[name]
        except KeyError:
            close = difflib.get_close_matches(str(name), self._entries, n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise RegistryError(
                f"unknown {self.kind} '{name}'.{hint} Known {self.kind}s: {', '.join(self.names())}"
            ) from None

    def build(self, name: str, /, **kwargs: Any) -> Any:
        """Call the factory registered as ``name`` with ``kwargs`` (a key it does not take is refused by name)."""
        self.check_options(name, kwargs, "")
        return self.get(name)(**kwargs)

    def options(self, name: str) -> set[str] | None:
        """The keyword arguments the factory of ``name`` takes (None: it takes any, ``**kwargs``)."""
        params = inspect.signature(self.get(name)).parameters.values()
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            return None
        return {p.name for p in params if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)}

    def check_options(self, name: str, kwargs: dict[str, Any], where: str) -> None:
        """A :class:`ConfigError` naming the first key of ``kwargs`` the factory of ``name`` does not take;
        ``where`` is the config node they come from (``data.sampler_options``)."""
        takes = self.options(name)
        if takes is None:
            return
        for key in kwargs:
            if key not in takes:
                close = difflib.get_close_matches(key, sorted(takes), n=2, cutoff=0.6)
                hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
                at = f"{where}.{key}" if where else repr(key)
                raise ConfigError(f"{at}: {self.kind} '{name}' has no option '{key}'.{hint} "
                                  f"It takes: {', '.join(sorted(takes))}")

    def names(self) -> list[str]:
        """All registered keys, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


BACKBONES = Registry("backbone")
VISION_TOWERS = Registry("vision tower")
AUDIO_ENCODERS = Registry("audio encoder")
PROJECTORS = Registry("projector")
SAMPLERS = Registry("sampler")
TEMPLATES = Registry("chat template")
DATASETS = Registry("dataset format")
SPEECH_CODECS = Registry("speech codec")
SPEECH_DECODERS = Registry("speech decoder")


def load_builtins() -> None:
    """Import the modules whose import fills the registries."""
    import vita.data.samplers  # noqa: F401
    import vita.data.sources  # noqa: F401
    import vita.data.templates  # noqa: F401
    import vita.model.audio  # noqa: F401
    import vita.model.backbones  # noqa: F401
    import vita.model.projectors  # noqa: F401
    import vita.model.speech.codecs  # noqa: F401
    import vita.model.speech.decoders  # noqa: F401
    import vita.model.vision  # noqa: F401
