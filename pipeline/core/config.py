"""Typed, frozen stage configs loaded from YAML with dotted ``key=value`` overrides.

Every stage declares one frozen dataclass. :func:`load_config` builds it from a YAML
file plus CLI overrides and refuses anything it does not understand: an unknown key
or a value of the wrong type is a :class:`ConfigError` that names the key (and the
file), so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config key is unknown, missing or of the wrong type (``key``: the dotted key, when known)."""

    def __init__(self, message: str, key: str | None = None):
        super().__init__(message)
        self.key = key


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert where lossless.

    Ints are accepted for floats and lists for tuples; nested dataclasses are built
    recursively, and a class with a ``from_mapping(data, prefix)`` classmethod builds itself. Anything else that does not match raises :class:`ConfigError`.
    """
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{key}: {value!r} does not match {_type_name(tp)}", key=key)
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(f"{key}: {value!r} is not one of {list(get_args(tp))}", key=key)
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__} {value!r}", key=key)
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{key}: expected {len(args)} items, got {len(value)}", key=key)
            return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        items = [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}", key=key)
        kt, vt = get_args(tp) or (Any, Any)
        return {_coerce(k, kt, f"{key}.<key>"): _coerce(v, vt, f"{key}.{k}") for k, v in value.items()}
    if isinstance(tp, type) and callable(getattr(tp, "from_mapping", None)):
        # a section whose keys are known only at run time (the method section: one sub-section per registered
        # method) builds itself; it reports unknown keys the same way
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping for {tp.__name__}, got {value!r}", key=key)
        return tp.from_mapping(value, prefix=f"{key}.")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping for {tp.__name__}, got {value!r}", key=key)
        return build_dataclass(tp, value, prefix=f"{key}.")
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}", key=key)
        if not math.isfinite(value):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}", key=key)
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}", key=key)
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}", key=key)
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}", key=key)
        return value
    if tp is Path:
        if not isinstance(value, (str, Path)):
            raise ConfigError(f"{key}: expected a path, got {value!r}", key=key)
        return Path(value)
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{key}: expected {tp.__name__}, got {value!r}", key=key)
    return value


def build_dataclass(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build the dataclass ``cls`` from ``data``, rejecting unknown keys by name."""
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(prefix + k for k in unknown)}; "
            f"{cls.__name__} accepts: {', '.join(sorted(fields))}", key=prefix + unknown[0]
        )
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(value, hints[name], prefix + name)
    missing = [
        prefix + n
        for n, f in fields.items()
        if n not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"missing required key(s): {', '.join(missing)}", key=missing[0])
    try:
        return cls(**kwargs)
    except ValueError as exc:  # a dataclass's own check (__post_init__): exit 2 naming its section
        if isinstance(exc, ConfigError):
            raise
        section = prefix.rstrip(".") or cls.__name__
        raise ConfigError(f"{section}: {exc}", key=prefix + next(iter(kwargs), "")) from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b=value`` into (["a", "b"], value); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value")
    key, raw = text.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"command-line override {text!r}: the value {raw!r} is not valid YAML ({problem})",
                          key=key) from None
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with every dotted override applied in order."""
    out: dict[str, Any] = yaml.safe_load(yaml.safe_dump(data)) or {}
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for part in path[:-1]:
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"command-line override {text!r}: {part} is not a mapping", key=part)
            node = nxt
        node[path[-1]] = value
    return out


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Load ``cls`` from a YAML file (optional) and ``key=value`` overrides.

    Errors name the offending key and the file it came from.
    """
    data: dict[str, Any] = {}
    overrides = list(overrides or [])
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist" if not path.exists() else
                              f"config file {path} is not a file")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: not UTF-8 text (byte offset {exc.start}); save the file as UTF-8") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: invalid YAML: {exc}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: top level must be a mapping")
        data = loaded or {}
    data = apply_overrides(data, overrides)
    try:
        return build_dataclass(cls, data)
    except ConfigError as exc:
        source = override_for_key(exc.key, overrides)
        if source is not None:
            raise ConfigError(f"command-line override {source!r}: {exc}", key=exc.key) from None
        where = f"{path}: " if path is not None else ""
        raise ConfigError(f"{where}{exc}", key=exc.key) from None


def override_for_key(key: str | None, overrides: list[str]) -> str | None:
    """The last override that set ``key`` (or a key above or below it), so an error names where the value came from."""
    if key is None:
        return None
    for text in reversed(overrides):
        okey = text.split("=", 1)[0]
        if (okey == key or key.startswith((okey + ".", okey + "[")) or okey.startswith(key + ".")):
            return text
    return None


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain-JSON view of a config (paths as strings, tuples as lists)."""

    def convert(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: convert(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if callable(getattr(v, "to_mapping", None)):  # a section that builds itself (see _coerce)
            return {str(k): convert(x) for k, x in v.to_mapping().items()}
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, (list, tuple)):
            return [convert(x) for x in v]
        if isinstance(v, dict):
            return {str(k): convert(x) for k, x in v.items()}
        return v

    return convert(cfg)


__all__ = [
    "ConfigError",
    "apply_overrides",
    "build_dataclass",
    "config_to_dict",
    "load_config",
    "parse_override",
]

_ = typing  # keep typing importable for forward refs in stage configs
