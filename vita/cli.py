"""Command lines -> configs, the same way for every vita command.

:func:`compose_cli` is what ``vita.check`` (and ``vita.chat``, ``vita.eval``) call: it honours
``--config-dir``/``-cd DIR``, ``hydra.searchpath=[...]`` on the command line and
the search path of the chosen ``conf/local`` file (``config_searchpath``) and composes ``conf/config.yaml``
once; a bad group option, key or value is one clear line (:func:`precheck`), not a traceback.
Overrides are parsed in one place, by Hydra's own grammar (:func:`parse_overrides`).
``python -m vita.run`` goes through Hydra's own ``@hydra.main`` after :func:`prepare_run_argv`.
Unknown group options are listed from every search path.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType
from hydra.errors import HydraException, OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from vita.config import CONF_DIR, register_configs, register_resolvers, suggest_key
from vita.errors import ConfigError

GROUPS = {"model", "data", "stage", "engine", "experiment", "local"}
CONFIG_DIR_FLAGS = ("--config-dir", "-cd")


def split_config_dirs(args: list[str]) -> tuple[list[str], list[str]]:
    """``(config dirs given with --config-dir/-cd, the other args)``; ``-cd DIR`` and ``--config-dir=DIR`` both work."""
    dirs, rest = [], []
    it = iter(args)
    for a in it:
        flag, eq, val = a.partition("=")
        if flag in CONFIG_DIR_FLAGS:
            d = val if eq else next(it, None)
            if not d:
                raise ConfigError(f"{flag} needs a folder: {flag} DIR")
            dirs.append(d)
        else:
            rest.append(a)
    return dirs, rest


def parse_overrides(args: list[str], strict: bool = False) -> list[Override]:
    """The ``key=value`` arguments of ``args`` parsed by Hydra's own grammar (``OverridesParser``): every vita
    command reads overrides here (``.key_or_group`` without ``+``/``~``, ``.value()``, ``.type``, ``.input_line``).
    Flags and bare paths are left out. A syntax error gives ``[]`` (Hydra's compose then reports it) or, with
    ``strict``, a one-line :class:`ConfigError`."""
    overrides = [a for a in args if "=" in a and not a.startswith("-")]
    try:
        return OverridesParser.create().parse_overrides(overrides)
    except OverrideParseException as e:
        if strict:
            raise ConfigError(f"bad override: {str(e).strip().splitlines()[0]}") from None
        return []


def override_key(override: str) -> str:
    """The key or group an override sets (``+model.overrides.x=1`` -> ``model.overrides.x``)."""
    parsed = parse_overrides([override], strict=True)
    return parsed[0].key_or_group if parsed else override


def is_addition(o: Override) -> bool:
    """``+key=value`` / ``++key=value``: the key may be new."""
    return o.type in (OverrideType.ADD, OverrideType.FORCE_ADD)




def _entry_dir(entry: str) -> Path | None:
    """The folder of one Hydra search path entry (``file://DIR``, ``pkg://package``, or a plain path)."""
    if entry.startswith("pkg://"):
        spec = importlib.util.find_spec(entry[len("pkg://"):].replace("/", "."))
        locs = list(spec.submodule_search_locations or []) if spec else []
        return Path(locs[0]) if locs else None
    return Path(entry.removeprefix("file://")).expanduser().resolve()


def _cmdline_searchpath(parsed: list) -> list[str]:
    for o in parsed:
        if o.key_or_group == "hydra.searchpath" and o.type == OverrideType.CHANGE:
            value = o.value()
            return [str(v) for v in (value if isinstance(value, list) else [value])]
    return []


def search_path(args: list[str]) -> list[str]:
    """Hydra search path entries beyond the package's ``conf/``, in order: ``--config-dir``/``-cd``,
    ``hydra.searchpath`` from the command line, then ``config_searchpath`` of the chosen ``conf/local`` file
    (Hydra takes ``hydra.searchpath`` from the primary config only, so the local file names it so)."""
    dirs, rest = split_config_dirs(args)
    entries = []
    for d in dirs:
        p = Path(d).expanduser().resolve()
        if not p.is_dir():
            raise ConfigError(f"--config-dir {d}: no such folder")
        entries.append(f"file://{p}")
    parsed = parse_overrides(rest)
    entries += [e for e in _cmdline_searchpath(parsed) if e not in entries]
    local = next((o.value() for o in parsed if o.key_or_group == "local" and o.type == OverrideType.CHANGE), "default")
    if local is not None and str(local) != "null":
        for d in [CONF_DIR, *filter(None, map(_entry_dir, entries))]:
            f = d / "local" / f"{local}.yaml"
            if f.is_file():
                local_cfg = OmegaConf.load(f)
                if OmegaConf.select(local_cfg, "hydra.searchpath") is not None:
                    raise ConfigError(f"{f}: Hydra reads hydra.searchpath only from the primary config; write it as "
                                      "'config_searchpath: [file://DIR, ...]' in this file (vita passes it on)")
                extra = OmegaConf.select(local_cfg, "config_searchpath") or []
                entries += [str(v) for v in extra if str(v) not in entries]
                break
    return entries


def option_dirs(entries: list[str]) -> list[Path]:
    """The folders holding config groups: the package's ``conf/`` then each search path entry's."""
    out = [CONF_DIR]
    for e in entries:
        d = _entry_dir(e)
        if d is not None and d not in out:
            out.append(d)
    return out


def _searchpath_override(entries: list[str]) -> list[str]:
    if not entries:
        return []
    quoted = ",".join("'" + e.replace("\\", "\\\\").replace("'", "\\'") + "'" for e in entries)
    return [f"hydra.searchpath=[{quoted}]"]


def prepare_run_argv(argv: list[str]) -> list[str]:
    """``vita.run``'s argv for ``@hydra.main``: the ``config_searchpath`` of ``conf/local`` is added to the
    command line's ``hydra.searchpath``; Hydra handles ``--config-dir`` itself."""
    dirs, rest = split_config_dirs(argv)
    given = [f"file://{Path(d).expanduser().resolve()}" for d in dirs] + _cmdline_searchpath(parse_overrides(rest))
    extra = [e for e in search_path(argv) if e not in given]
    if not extra:
        return list(argv)
    keep = [a for a in argv if not a.startswith("hydra.searchpath=")]
    return _searchpath_override(_cmdline_searchpath(parse_overrides(rest)) + extra) + keep  # first: argparse wants
    # overrides before flags such as --cfg job


def precheck(args: list[str]) -> str | None:
    """Return an error line for the first unknown key, group option or badly typed value in ``args``, else None."""
    try:
        entries = search_path(args)
    except ConfigError as e:
        return str(e)
    _, args = split_config_dirs(args)
    parsed = parse_overrides(args)
    return _check_groups(parsed, option_dirs(entries)) or _check_keys(parsed, entries)


def _check_groups(parsed: list[Override], dirs: list[Path]) -> str | None:
    """An unknown group option (``engine=zero9``), from the option files alone (nothing composed)."""
    for o in parsed:
        if o.key_or_group in GROUPS and o.type == OverrideType.CHANGE:
            err = _check_group_choice(o.key_or_group, o.value(), dirs)
            if err:
                return err
    return None


def _check_keys(parsed: list[Override], entries: list[str]) -> str | None:
    """An unknown key or a badly typed value, checked on the chosen groups composed without the key overrides."""
    if not any(o.key_or_group not in GROUPS for o in parsed):
        return None
    groups = [o.input_line for o in parsed if o.key_or_group in GROUPS and not o.is_sweep_override()]
    try:
        cfg = _compose(groups, entries)
    except (HydraException, OmegaConfBaseException):
        return None  # a bad group choice: Hydra's own message lists the options
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


def _compose(overrides: list[str], entries: list[str], config_name: str = "config") -> DictConfig:
    register_configs()
    register_resolvers()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name, overrides=[*overrides, *_searchpath_override(entries)])
    finally:
        GlobalHydra.instance().clear()


def compose_cli(args: list[str], config_name: str = "config", resolve: bool = True) -> DictConfig:
    """Compose vita's config from command-line ``args`` as ``python -m vita.run`` would (config dirs,
    search paths, overrides); every problem is a one-line :class:`ConfigError`.

    Args:
        args: ``key=value`` overrides, group choices, ``--config-dir DIR``/``-cd DIR``, ``hydra.searchpath=[...]``.
        resolve: resolve interpolations (``${vita_demo:...}``) before returning.
    """
    entries = search_path(args)
    _, rest = split_config_dirs(args)
    err = _check_groups(parse_overrides(rest), option_dirs(entries))
    if err:
        raise ConfigError(err)
    rest = [a for a in rest if not a.startswith("hydra.searchpath=")]
    try:  # composed once; only a failure composes the chosen groups again, to name the bad key in one line
        cfg = _compose(rest, entries, config_name)
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(precheck(args) or str(e).strip().splitlines()[0]) from None
    if resolve:
        OmegaConf.resolve(cfg)
    return cfg


def group_options(group: str, dirs: list[Path]) -> dict[str, Path]:
    """Option name -> the folder it comes from, for one config group over ``dirs`` (first one wins)."""
    out: dict[str, Path] = {}
    for d in dirs:
        for p in sorted((d / group).glob("*.yaml")):
            out.setdefault(p.stem, d)
    return out


def _check_group_choice(group: str, value, dirs: list[Path] | None = None) -> str | None:
    """An unknown option of a config group (``engine=zero9``) -> one line with the options of every search path."""
    dirs = dirs or [CONF_DIR]
    values = getattr(value, "list", None) or [value]
    found = group_options(group, dirs)
    options = sorted(found)
    for v in values:
        if v is None or str(v) == "null" or str(v) in options:
            continue
        close = difflib.get_close_matches(str(v), options, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        where = ", ".join(_short(d) for d in dirs)
        extra = [f"{o} ({_short(found[o])})" for o in options if found[o] != CONF_DIR]
        listed = [o for o in options if found[o] == CONF_DIR] + extra
        return (f"unknown {group} '{v}' (no {group}/{v}.yaml in {where}).{hint} Options: {', '.join(listed)}. "
                "Add a folder with --config-dir DIR or hydra.searchpath=[file://DIR]")
    return None


def _short(d: Path) -> str:
    if d == CONF_DIR:
        return "conf"
    try:
        return os.path.relpath(d) if not os.path.relpath(d).startswith("..") else str(d)
    except ValueError:
        return str(d)


def _in_open_dict(cfg, key: str) -> bool:
    """Keys under free-form dicts (``model.overrides``, ``engine.extra``) may be anything."""
    parent = key.rpartition(".")[0]
    node = OmegaConf.select(cfg, parent) if parent else None
    return node is not None and OmegaConf.is_dict(node) and not OmegaConf.is_struct(node) or (
        parent.split(".")[:2] in (["model", "overrides"], ["engine", "extra"])
    )
