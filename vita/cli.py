"""Check command-line overrides before Hydra runs, so a typo is one clear line, not a traceback."""

from __future__ import annotations

import difflib

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import OverrideType
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from vita.config import CONF_DIR, register_configs, register_resolvers, suggest_key

GROUPS = {"model", "data", "stage", "engine", "experiment", "local"}


def precheck(args: list[str]) -> str | None:
    """Return an error line for the first unknown key or badly typed value in ``args``, else None."""
    overrides = [a for a in args if "=" in a and not a.startswith("-")]
    if not overrides:
        return None
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception:  # Hydra reports syntax errors well itself
        return None
    for o in parsed:
        if o.key_or_group in GROUPS and o.type == OverrideType.CHANGE:
            err = _check_group_choice(o.key_or_group, o.value())
            if err:
                return err
    groups = [o.input_line for o in parsed if o.key_or_group in GROUPS or o.key_or_group.startswith("hydra")]
    groups = [g for g in groups if "," not in g.split("=", 1)[1]]
    register_configs()
    register_resolvers()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose("config", overrides=[g for g in groups if not g.startswith("hydra")])
    except Exception:
        return None  # a bad group choice: Hydra's own message lists the options
    finally:
        GlobalHydra.instance().clear()
    for o in parsed:
        key = o.key_or_group
        if key in GROUPS or key.startswith("hydra") or o.type != OverrideType.CHANGE:
            continue
        if OmegaConf.select(cfg, key, default="__missing__") == "__missing__":
            if _in_open_dict(cfg, key):
                return f"config key '{key}' is not set yet; add it with '+{o.input_line}'"
            return suggest_key(cfg, key)
        if o.is_sweep_override():
            continue
        try:
            OmegaConf.update(cfg, key, o.value(), merge=True)
        except OmegaConfBaseException as e:
            msg = str(e).splitlines()[0]
            return f"config key '{key}': {msg}"
    return None


def _check_group_choice(group: str, value) -> str | None:
    """An unknown option of a config group (``engine=zero9``) -> one line with the options."""
    values = getattr(value, "list", None) or [value]
    options = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
    for v in values:
        if v is None or str(v) == "null" or str(v) in options:
            continue
        close = difflib.get_close_matches(str(v), options, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        return f"unknown {group} '{v}' (no conf/{group}/{v}.yaml).{hint} Options: {', '.join(options)}"
    return None


def _in_open_dict(cfg, key: str) -> bool:
    """Keys under free-form dicts (``model.overrides``, ``engine.extra``) may be anything."""
    parent = key.rpartition(".")[0]
    node = OmegaConf.select(cfg, parent) if parent else None
    return node is not None and OmegaConf.is_dict(node) and not OmegaConf.is_struct(node) or (
        parent.split(".")[:2] in (["model", "overrides"], ["engine", "extra"])
    )
