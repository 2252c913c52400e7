"""Official recipes, one TOML file per method and dataset, and the loader with command-line overrides.

A config file has these tables (every key optional except ``method``):

```toml
method = "hico"                # a name of skelfast.methods.METHODS
base = "hico"                  # optional: start from another config and change only what follows
dataset = "ntu60-xsub"         # what the official recipe was run on (informational)
source = "run_pretraining.sh"  # where the numbers come from

[model]       # the method's config dataclass (skelfast.methods.<name>.<Name>Config), as keyword arguments
[data]        # normalization ("agcn" | "frame50" | ...), frames, ... : how the official data was prepared
[train]       # epochs, batch_size, drop_last, optimizer ("sgd" | "adam"), lr, momentum, weight_decay,
              # nesterov, schedule ("step" | "cosine"), milestones (0-based epochs from which lr *= gamma),
              # gamma, warmup_epochs, seed
[eval.linear] [eval.knn] [eval.finetune] [eval.semi] [eval.retrieval]   # each protocol's official settings
```

``load_config("hico")`` reads ``hico.toml`` here; ``load_config("hico_ntu120")`` a per-dataset file;
any other string is a path. Overrides are ``"train.lr=0.1"``-style strings whose values are parsed
as TOML (``0.1``, ``[50, 70]``, ``true``, ``"text"``; a bare word is a string).
"""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

CONFIG_DIR = Path(__file__).resolve().parent


def available() -> list[str]:
    """Names of the configs shipped with skelfast."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.toml"))


def config_path(name_or_path: str | Path) -> Path:
    """The file behind a config name (``hico``, ``hiclr_ntu120``) or a path."""
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.exists():
        if not p.exists():
            raise FileNotFoundError(f"config file not found: {p}")
        return p
    shipped = CONFIG_DIR / f"{name_or_path}.toml"
    if not shipped.exists():
        raise FileNotFoundError(f"no config named {name_or_path!r}; shipped configs: {available()}")
    return shipped


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # a bare word: a string


def apply_overrides(config: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """A copy of ``config`` with ``"section.key=value"`` overrides applied (sections are created)."""
    out = copy.deepcopy(config)
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"override {item!r} is not of the form section.key=value")
        *path, leaf = key.strip().split(".")
        node = out
        for part in path:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r}: {part!r} is a value, not a table")
        node[leaf] = _parse_value(value.strip())
    return out


def merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``changes`` laid over it, table by table (values and lists replace)."""
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _read(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    if path in seen:
        raise ValueError(f"{path}: `base` configs form a cycle: {' -> '.join(map(str, (*seen, path)))}")
    try:
        config = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{path}: not valid TOML: {err}") from err
    base = config.pop("base", None)
    if base is not None:
        # a file path is relative to this config's folder; a bare name is a shipped config
        parent = config_path(path.parent / base if str(base).endswith(".toml") else str(base))
        config = merge(_read(parent, (*seen, path)), config)
    return config


def load_config(name_or_path: str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """Read a config (see the module docstring), lay it over its ``base`` if it names one, and
    apply overrides; raises on a malformed file."""
    path = config_path(name_or_path)
    config = _read(path)
    if "method" not in config:
        raise ValueError(f'{path}: a config needs a top-level `method = "..."`')
    return apply_overrides(config, overrides)
