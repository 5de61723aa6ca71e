"""Typed configs from YAML files and dotted ``key=value`` overrides.

A config is a (nested) dataclass. :func:`load_config` reads a YAML file, applies overrides such as
``train.lr=3e-4 model.lora.enabled=true``, and checks every value against the dataclass field
types and the allowed range declared next to each field (:class:`~speechllm.config.schema.Range`,
in ``field(metadata={"range": ...})``). Unknown keys, wrong types, out-of-range or non-finite
numbers, malformed YAML and missing files raise one :class:`~speechllm.errors.ConfigError` that
names the key, the value and the file (with a "did you mean" suggestion for near-misses), before
any model is loaded. Field help text lives in ``field(metadata={"help": ...})`` so that
``speechllm config fields`` and the docs are generated from one place.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import logging
import math
import os
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

from speechllm.errors import ConfigError

T = TypeVar("T")
log = logging.getLogger(__name__)


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in get_args(tp))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    """Check ``value`` against type ``tp`` (converting where YAML is ambiguous) or raise."""
    origin = get_origin(tp)

    def fail() -> typing.NoReturn:
        raise ConfigError(
            f"{source}: {key}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}"
        )

    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            fail()
        return _from_dict(tp, value, source, prefix=key + ".")
    if origin is Literal:
        if value in get_args(tp):
            return value
        raise ConfigError(
            f"{source}: {key}: {value!r} is not one of {', '.join(repr(a) for a in get_args(tp))}"
        )
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key, source)
            except ConfigError as e:
                errors.append(e)
        fail()
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            fail()
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{source}: {key}: expected {len(args)} values, got {len(value)}")
            return tuple(_coerce(v, a, f"{key}[{i}]", source) for i, (v, a) in enumerate(zip(value, args)))
        item_tp = args[0] if args else Any
        items = [_coerce(v, item_tp, f"{key}[{i}]", source) for i, v in enumerate(value)]
        return tuple(items) if (origin is tuple or tp is tuple) else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            fail()
        args = get_args(tp)
        k_tp, v_tp = args if args else (Any, Any)
        return {
            _coerce(k, k_tp, f"{key}.<key>", source): _coerce(v, v_tp, f"{key}.{k}", source)
            for k, v in value.items()
        }
    if tp is bool:
        if isinstance(value, bool):
            return value
        fail()
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        fail()
    if tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            # PyYAML (YAML 1.1) reads "1e-4" as a string; accept anything float() accepts.
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None:
            fail()
        # No setting of the project means anything with NaN or infinity (a NaN learning rate
        # trains NaN weights; an infinite limit is no limit): refuse them for every float.
        if not math.isfinite(number):
            raise ConfigError(f"{source}: {key}: {number!r} is not a finite number")
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        fail()
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    fail()


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _from_dict(cls: type[T], data: dict[str, Any], source: str, prefix: str = "") -> T:
    hints = _field_types(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
            raise ConfigError(
                f"{source}: unknown key {prefix}{key}{hint}; known keys: "
                + ", ".join(prefix + k for k in fields)
            )
        kwargs[key] = _coerce(value, hints[key], prefix + key, source)
    missing = [
        name
        for name, f in fields.items()
        if name not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING  # type: ignore[misc]
    ]
    if missing:
        raise ConfigError(f"{source}: missing required key(s): {', '.join(prefix + m for m in missing)}")
    try:
        obj = cls(**kwargs)
    except (ValueError, TypeError) as e:  # __post_init__ validation
        raise ConfigError(f"{source}: {prefix.rstrip('.') or cls.__name__}: {e}") from None
    # Nested sections given in ``data`` were checked when they were built; the others hold
    # defaults, which satisfy their ranges (tests/test_config.py checks that).
    for f in dataclasses.fields(obj):
        _check_field(obj, f, source, prefix)
    return obj


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return dataclasses.MISSING


def _allowed_names(spec: str) -> list[str]:
    """The strings a ``Range.choices`` spec (``"module:attr.attr"``) allows, sorted."""
    module_name, _, attr = spec.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return sorted(obj() if callable(obj) else obj)


def _range_text(rng: Any, prefix: str, obj: Any = None, *, each: bool = False) -> str:
    """``rng`` in words, e.g. ``2 values, each >= 0 and < 1`` or ``> 0 and < pitch.ceiling_hz
    (500.0)``. With ``obj`` the values of sibling fields that serve as bounds are shown;
    ``each``: the field holds several numbers (a list or mapping)."""

    def sibling(name: str) -> str:
        return f"{prefix}{name}" + (f" ({getattr(obj, name)!r})" if obj is not None else "")

    bounds = " and ".join(f"{op} {sibling(b) if isinstance(b, str) else repr(b)}" for op, b in rng.bounds())
    if rng.length is None:
        return f"each {bounds}" if each and bounds else bounds
    if isinstance(rng.length, str):
        count = f"as many values as {prefix}{rng.length}"
        if obj is not None:
            count += f" ({len(getattr(obj, rng.length) or [])})"
    else:
        count = f"{rng.length} values"
    return count + (f", each {bounds}" if bounds else "")


def _check_field(obj: Any, f: dataclasses.Field, source: str, prefix: str) -> None:
    """Check the value of field ``f`` of config ``obj`` against its declared ``Range``: the one
    range check of every config section (a number, each item of a list, each value of a
    mapping; a mapping's keys against ``choices``)."""
    rng = f.metadata.get("range")
    value = getattr(obj, f.name)
    if rng is None or value is None:
        return
    key = prefix + f.name
    if rng.choices is not None and value != _field_default(f):
        names = list(value) if isinstance(value, (dict, list, tuple)) else [value]
        allowed = _allowed_names(rng.choices)
        for name in names:
            if name not in allowed:
                raise ConfigError(
                    f"{source}: {key}: {name!r} is not one of {', '.join(repr(a) for a in allowed)}"
                )
    if isinstance(value, dict):
        numbers = list(value.values())
    elif isinstance(value, (list, tuple)):
        numbers = list(value)
    else:
        numbers = [value]
    ok = True
    if rng.length is not None and isinstance(value, (list, tuple)):
        expected = rng.length if isinstance(rng.length, int) else len(getattr(obj, rng.length) or [])
        ok = len(value) == expected
    for op, bound in rng.bounds():
        limit = getattr(obj, bound) if isinstance(bound, str) else bound
        if limit is None:
            continue
        ok = ok and all(_OPS[op](number, limit) for number in numbers)
    if not ok:
        raise ConfigError(
            f"{source}: {key}: {value!r} is out of range "
            f"(allowed: {_range_text(rng, prefix, obj, each=isinstance(value, (dict, list, tuple)))})"
        )


_OPS = {
    ">=": lambda a, b: a >= b,
    ">": lambda a, b: a > b,
    "<=": lambda a, b: a <= b,
    "<": lambda a, b: a < b,
}


def range_arg(tp: type, *, ge: Any = None, gt: Any = None, le: Any = None, lt: Any = None) -> typing.Callable[[str], Any]:
    """An argparse ``type=`` for a number option that is not a config field (``eval --batch-size``):
    parses ``tp`` and checks it against the same kind of range as the config fields, so argparse
    answers ``argument --batch-size: 0 is out of range (allowed: >= 1)`` before anything runs."""
    import argparse

    from speechllm.config.schema import Range

    rng = Range(ge=ge, gt=gt, le=le, lt=lt)

    def parse(text: str) -> Any:
        try:
            value = tp(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {tp.__name__}, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{value!r} is not a finite number")
        if not all(_OPS[op](value, bound) for op, bound in rng.bounds()):
            raise argparse.ArgumentTypeError(f"{value!r} is out of range (allowed: {_range_text(rng, '')})")
        return value

    parse.__name__ = tp.__name__  # argparse names the type in its own messages
    return parse


def iter_config_fields(cfg: Any, prefix: str = "") -> typing.Iterator[tuple[str, Any, dataclasses.Field]]:
    """Yield ``(dotted_key, value, field)`` for every leaf field of a config object."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            yield from iter_config_fields(value, prefix + f.name + ".")
        else:
            yield prefix + f.name, value, f


def check_config(cfg: Any, source: str = "<config>", prefix: str = "") -> None:
    """Check every field of a config (and of its nested sections) against its declared range.

    Loading a config does this already; call it for a config built or changed in Python."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            check_config(value, source, prefix + f.name + ".")
        else:
            _check_field(cfg, f, source, prefix)


def from_dict(cls: type[T], data: dict[str, Any], source: str = "<dict>") -> T:
    """Build dataclass ``cls`` from a plain dict, checking keys and types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    return _from_dict(cls, data, source)


def to_dict(cfg: Any) -> Any:
    """Plain-data (YAML/JSON-ready) form of a config dataclass."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    return cfg


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML mapping; missing file, syntax errors and non-mapping tops raise ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"{path}{where}: malformed YAML ({problem})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value`` into (``["a", "b", "c"]``, parsed value). Values are YAML scalars,
    lists or mappings: ``train.lr=3e-4``, ``model.lora.enabled=true``, ``data.weights=[1,2]``."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key=value (e.g. train.lr=3e-4)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() != "" else ""
    except yaml.YAMLError:
        raise ConfigError(f"override {text!r}: value is not valid YAML") from None
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Return a copy of ``data`` with dotted overrides applied (creating nested mappings)."""
    import copy

    out = copy.deepcopy(data)
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {part} is not a section")
            node = child
        node[path[-1]] = value
    return out


def _moved(cls: type) -> dict[str, str]:
    return getattr(cls, "moved_keys", {})


def moved_key(cls: type, key: str) -> str:
    """``key``'s current name (a dotted key ``cls.moved_keys`` lists as moved, else itself)."""
    return _moved(cls).get(key, key)


def moved_override(cls: type, text: str) -> str:
    """An override ``KEY=VALUE`` with a moved key renamed (and a warning naming the new key)."""
    key, sep, value = text.partition("=")
    new = moved_key(cls, key.strip())
    if sep and new != key.strip():
        log.warning("override %s: %s is now %s; the old key still works, use the new one", text, key.strip(), new)
        return f"{new}={value}"
    return text


def migrate_moved_keys(cls: type, data: dict[str, Any], source: str) -> dict[str, Any]:
    """A copy of ``data`` with every old key of ``cls.moved_keys`` moved to its new place (a
    one-line warning each); both the old and the new key set is an error."""
    import copy

    out = None
    for old, new in _moved(cls).items():
        old_path, new_path = old.split("."), new.split(".")
        parent = data
        for part in old_path[:-1]:
            parent = parent.get(part) if isinstance(parent, dict) else None
        if not isinstance(parent, dict) or old_path[-1] not in parent:
            continue
        out = out if out is not None else copy.deepcopy(data)
        node = out
        for part in old_path[:-1]:
            node = node[part]
        value = node.pop(old_path[-1])
        target = out
        for part in new_path[:-1]:
            child = target.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{source}: {part} is not a section")
            target = child
        if new_path[-1] in target:
            raise ConfigError(f"{source}: both {old} and {new} are set; {old} is the old name of {new}: keep only {new}")
        target[new_path[-1]] = value
        log.warning("%s: %s is now %s; the old key still loads, rename it", source, old, new)
    return out if out is not None else data


def load_config(
    cls: type[T],
    path: str | os.PathLike | None = None,
    overrides: list[str] | tuple[str, ...] = (),
) -> T:
    """Load dataclass ``cls`` from an optional YAML file plus dotted overrides.

    A key listed in ``cls.moved_keys`` (old -> new) is read as the new key, with a one-line
    warning naming it, in the file and in the overrides alike."""
    data = read_yaml(path) if path is not None else {}
    source = str(path) if path is not None else "<defaults>"
    data = migrate_moved_keys(cls, data, source)
    if overrides:
        data = apply_overrides(data, [moved_override(cls, o) for o in overrides])
        source += " + command-line overrides"
    return from_dict(cls, data, source)


def dump_yaml(cfg: Any) -> str:
    """YAML text of a config (field order kept)."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True)


def save_resolved_config(cfg: Any, out_dir: str | os.PathLike, name: str = "config.yaml") -> Path:
    """Write the resolved config next to a run's outputs (atomically) and return its path."""
    from speechllm.utils.fs import atomic_write_text

    path = Path(out_dir) / name
    atomic_write_text(path, dump_yaml(cfg))
    return path


def iter_field_help(cls: type, prefix: str = "") -> typing.Iterator[tuple[str, str, Any, str]]:
    """Yield ``(dotted_key, type_name, default, help)`` for every leaf field of a config class;
    ``type_name`` carries the allowed range (``int >= 1``)."""
    hints = _field_types(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            yield from iter_field_help(tp, prefix + f.name + ".")
            continue
        default = _field_default(f)
        if default is dataclasses.MISSING:
            default = "<required>"
        type_name = _type_name(tp)
        rng = f.metadata.get("range")
        if rng is not None and (rng.bounds() or rng.length is not None):
            origin = get_origin(tp)
            several = origin in (list, tuple, dict) or any(
                get_origin(a) in (list, tuple, dict) for a in get_args(tp))
            type_name += " " + _range_text(rng, prefix, each=several)
        yield prefix + f.name, type_name, default, f.metadata.get("help", "")
