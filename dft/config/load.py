"""Compose a RunConfig from defaults, YAML files and ``--set`` overrides, with errors people can act on."""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any, Iterable

import yaml
from pydantic import ValidationError

from dft.config.schema import RunConfig
from dft.errors import DftError


class ConfigError(DftError, ValueError):
    """A configuration problem, named by field, rule and value. Raised before any cluster work."""


def _format_validation(err: ValidationError, origin: str) -> str:
    lines = [f"invalid configuration ({origin}):"]
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"]) or "<root>"
        if not e["loc"]:  # a check across sections: its message names the fields and values itself
            lines.append(f"  {e['msg'].removeprefix('Value error, ')}")
        elif e["type"] == "extra_forbidden":
            lines.append(f"  {field}: unknown key (not a field of this section); value {e['input']!r}")
        else:
            lines.append(f"  {field}: {e['msg']}; got {e.get('input')!r}")
    return "\n".join(lines)


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """Turn ``["generate.steps=4", "model.source=s3://b/m"]`` into a nested dict. Values are YAML scalars."""
    nested: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"bad override {item!r}: expected section.key=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts) or len(parts) < 2:
            raise ConfigError(f"bad override {item!r}: key {key!r} must be section.key (e.g. generate.steps)")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"bad override {item!r}: value is not valid YAML ({exc})") from exc
        node = nested
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"bad override {item!r}: {p!r} is set to a value and also used as a section")
        node[parts[-1]] = value
    return nested


def deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in top.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _expand_env(node: Any, missing: list[str], field: str = "") -> Any:
    """``${NAME}`` inside a string value becomes the environment variable NAME (how the cluster presets
    take the bucket from DFT_BUCKET). An unset or empty variable is listed in ``missing`` by field."""
    if isinstance(node, dict):
        return {k: _expand_env(v, missing, f"{field}.{k}" if field else str(k)) for k, v in node.items()}
    if isinstance(node, list):
        return [_expand_env(v, missing, f"{field}.{i}") for i, v in enumerate(node)]
    if not isinstance(node, str):
        return node

    def sub(m: re.Match) -> str:
        value = os.environ.get(m.group(1), "")
        if not value:
            missing.append(f"  {field}: needs the environment variable {m.group(1)} (unset or empty); got {node!r}")
        return value

    return _ENV_REF.sub(sub, node)


def _read_yaml(path: str | Path) -> dict[str, Any]:
    from dft import storage

    try:
        text = storage.read_text(str(path))
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {path}") from exc
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: top level must be a mapping of sections, got {type(data).__name__}")
    return data


def load_config(
    files: Iterable[str | Path] | str | Path | None = None, overrides: Iterable[str] = ()
) -> RunConfig:
    """Defaults, then each YAML file in order, then overrides. Raises ConfigError naming field and value."""
    if isinstance(files, (str, Path)):
        files = [files]
    merged: dict[str, Any] = {}
    origin = ["defaults"]
    for f in files or []:
        merged = deep_merge(merged, _read_yaml(f))
        origin.append(str(f))
    over = parse_overrides(overrides)
    if over:
        merged = deep_merge(merged, over)
        origin.append("--set " + " ".join(overrides))
    missing: list[str] = []
    merged = _expand_env(merged, missing)
    if missing:
        raise ConfigError(
            f"invalid configuration ({' + '.join(origin)}):\n" + "\n".join(missing) + "\n"
            "  Set it where the driver runs (e.g. `export DFT_BUCKET=<terraform output bucket_name>`; for "
            "`ray job submit`, on the head or with --runtime-env-json '{\"env_vars\": {...}}'), or "
            "--set the field itself."
        )
    try:
        return RunConfig.model_validate(merged)
    except ValidationError as err:
        raise ConfigError(_format_validation(err, " + ".join(origin))) from None


def dump_config(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
