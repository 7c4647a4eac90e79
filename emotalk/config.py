"""One config system: YAML files -> typed dataclasses, ``key=value`` overrides, saved into run folders.

A config file names its ``task`` (``landmark``, ``texture``, ``emotion``, ``eval``, ...). This module
knows no task: the caller passes the dataclass to read into (``schema``), or a mapping task name ->
dataclass from which the file's ``task:`` picks (the trainable tasks' mapping is
:data:`emotalk.train.tasks.TRAIN_CONFIGS`; the evaluation config is chosen by the ``evaluate`` command).
A file may start from another with ``_base_: other.yaml`` (path relative to the file) and override only
what differs. Unknown keys are rejected with their dotted name.

    cfg = load_config("configs/landmark/tiny.yaml", ["optim.lr=1e-3", "train.steps=50"],
                      schema=LandmarkTrainConfig)
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Mapping, Union

import yaml

from emotalk.errors import ConfigError
from emotalk.utils.io import atomic_write_text

#: What a config is read into: one top-level dataclass, or task name -> dataclass.
Schema = Union[type, Mapping[str, type]]

REPO_ROOT = Path(__file__).resolve().parents[1]


def _bundled_config_dir() -> Path:
    """The shipped configs. The repository keeps them in a top-level ``configs/`` folder (where users look
    for them); packaging (setup.py) installs that folder as the package ``emotalk.configs``, so a
    non-editable install finds them next to this file, and a source checkout or an editable install finds
    them one level up. Plain files in both cases, so ``_base_:`` paths relative to a file keep working."""
    installed = Path(__file__).resolve().parent / "configs"
    return installed if installed.is_dir() else REPO_ROOT / "configs"


CONFIG_DIR = _bundled_config_dir()


def resolve_config_path(name: str | Path) -> Path:
    """Find a config by path (absolute or relative to the working folder), or by a short name such as
    ``landmark/tiny`` / ``landmark/tiny.yaml`` / ``configs/landmark/tiny.yaml`` among the shipped configs."""
    p = Path(name)
    short = Path(*p.parts[1:]) if len(p.parts) > 1 and p.parts[0] == "configs" else p
    candidates = [p]
    if not p.is_absolute():
        candidates += [CONFIG_DIR / short, CONFIG_DIR / short.with_suffix(".yaml")]
    for c in candidates:
        if c.is_file():
            return c
    shipped = sorted(q.relative_to(CONFIG_DIR).with_suffix("").as_posix() for q in CONFIG_DIR.rglob("*.yaml"))
    raise ConfigError(f"config {str(name)!r} not found; pass a YAML path or one of the shipped configs: "
                      f"{', '.join(shipped) or f'(none found in {CONFIG_DIR})'}")


#: A config is a few kilobytes; a file this large is not one (and parsing it would take a long time).
MAX_CONFIG_BYTES = 1 << 20
#: Nodes a document may expand to once its aliases (``*name``) are followed. YAML aliases share one
#: object, but merging, validating and saving a config walk it as a tree, so a "billion laughs" file (nine
#: levels of nine aliases, a few hundred bytes) would expand to 10**9 nodes and exhaust the memory.
MAX_CONFIG_NODES = 100_000


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses documents which expand past :data:`MAX_CONFIG_NODES` nodes or
    alias themselves, measured on the composed node graph before any Python object is built."""

    def compose_document(self):
        node = super().compose_document()
        _expanded_size(node, {}, set())
        return node


def _expanded_size(node: yaml.Node, sizes: dict[int, int], open_: set[int]) -> int:
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_:
        raise ConfigError("the YAML refers to itself through an alias (a recursive anchor); write the values out")
    open_.add(key)
    total = 1
    if isinstance(node, yaml.SequenceNode):
        for child in node.value:
            total += _expanded_size(child, sizes, open_)
    elif isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            total += _expanded_size(k, sizes, open_) + _expanded_size(v, sizes, open_)
    open_.discard(key)
    if total > MAX_CONFIG_NODES:
        raise ConfigError(f"the YAML expands to more than {MAX_CONFIG_NODES} values through its aliases "
                          f"(*name); a config is never this large, write the values out")
    sizes[key] = total
    return total


def safe_yaml(text: str, where: str) -> Any:
    """Parse YAML text with the bounded safe loader; any problem is a :class:`ConfigError` naming ``where``."""
    try:
        return yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 - a SafeLoader subclass
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: not valid YAML ({str(e).splitlines()[0]})") from None
    except RecursionError:
        raise ConfigError(f"{where}: the YAML is nested too deeply to be a config; flatten it") from None


def _read_config_text(path: Path) -> str:
    """The file's text, refusing anything larger than :data:`MAX_CONFIG_BYTES` before reading it."""
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: {size} bytes is too large for a config (limit {MAX_CONFIG_BYTES}); "
                              f"pass the YAML config file, not a data file")
        with open(path, "rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"{path}: cannot be read ({e.strerror or e}); check the path and its permissions") from None
    if len(raw) > MAX_CONFIG_BYTES:  # grew while we looked, or a special file
        raise ConfigError(f"{path}: too large for a config (limit {MAX_CONFIG_BYTES} bytes)")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file; pass a YAML config") from None


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: _base_ chain loops back to itself")
    if not path.is_file():
        raise ConfigError(f"{path}: not found (named by a _base_: entry or the command line); fix the path")
    data = safe_yaml(_read_config_text(path), str(path)) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of keys to values")
    base = data.pop("_base_", None)
    if base is None:
        return data
    merged = _read_yaml(path.parent / base, seen + (path,))
    return deep_merge(merged, data)


def deep_merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for k, v in top.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def parse_overrides(overrides: list[str] | None) -> dict:
    """``["a.b=1", "c=[1, 2]"]`` -> ``{"a": {"b": 1}, "c": [1, 2]}`` (values parsed as YAML)."""
    tree: dict = {}
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. optim.lr=1e-4)")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"override {item!r} has an empty key")
        try:
            value = safe_yaml(raw, f"override {key}") if raw != "" else ""
        except ConfigError:
            if len(raw) > MAX_CONFIG_BYTES:
                raise
            value = raw
        node = tree
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} conflicts with another override of {part!r}")
        node[parts[-1]] = value
    return tree


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin is Union or (types.UnionType is not None and isinstance(tp, types.UnionType)):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{key}: invalid value {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {list(args)}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping for section {key!r}, got {value!r}")
        return from_dict(tp, value, prefix=key + ".")
    if origin in (list, tuple) or tp in (list, tuple):
        if isinstance(value, (str, int, float)) and not isinstance(value, bool) and origin is not None:
            value = [value] if not isinstance(value, str) or "," not in value else value.split(",")
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)}")
            return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        inner = args[0] if args else Any
        items = [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if (origin is tuple or tp is tuple) else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        vt = args[1] if len(args) == 2 else Any
        return {str(k): _coerce(v, vt, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    return value


def from_dict(cls: type, data: dict, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a (nested) dict; unknown keys are an error naming the key."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        k = unknown[0]
        close = difflib.get_close_matches(k, list(fields), n=1)
        hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
        raise ConfigError(f"unknown config key '{prefix}{k}'{hint}; known keys here: "
                          f"{', '.join(sorted(fields))}")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(value, hints[name], prefix + name)
    try:
        obj = cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{prefix or 'config'}: {e}") from None
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate()
    return obj


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def _schema_task(cls: type) -> str | None:
    """The default of a dataclass's ``task`` field (its own task name), if it has one."""
    for f in dataclasses.fields(cls):
        if f.name == "task" and isinstance(f.default, str):
            return f.default
    return None


def config_class(schema: Schema, task: str | None, where: str = "config") -> type:
    """The dataclass ``schema`` gives for ``task`` (a mapping is looked up; one class must match)."""
    if isinstance(schema, Mapping):
        if task is None:
            raise ConfigError(f"{where}: says no 'task:'; add one of: {', '.join(sorted(schema))}")
        if task not in schema:
            raise ConfigError(f"{where}: task {task!r} cannot be used here; choose one of "
                              f"{', '.join(sorted(schema))}")
        return schema[task]
    if not (isinstance(schema, type) and dataclasses.is_dataclass(schema)):
        raise TypeError(f"schema must be a config dataclass or a mapping task -> dataclass, got {schema!r}")
    own = _schema_task(schema)
    if task is not None and own is not None and task != own:
        raise ConfigError(f"{where}: is a {task!r} config, but a {own!r} config is needed here")
    return schema


def load_config(path: str | Path, overrides: list[str] | None = None, schema: Schema | None = None,
                task: str | None = None) -> Any:
    """Read a YAML config (with ``_base_`` inheritance), apply overrides, return the typed dataclass.

    ``schema``: the dataclass to read into, or a mapping task name -> dataclass (the file's ``task:``, or
    ``task`` if given, selects). ``task`` also insists on that task (an error names both)."""
    if schema is None:
        raise TypeError("load_config needs schema=: the config dataclass, or a mapping task -> dataclass "
                        "(the trainable tasks: TRAIN_CONFIGS in the train package)")
    p = resolve_config_path(path)
    data = deep_merge(_read_yaml(p), parse_overrides(overrides))
    file_task = data.get("task")
    if task is not None and file_task is not None and file_task != task:
        raise ConfigError(f"{p}: is a {file_task!r} config, but a {task!r} config is needed here")
    task = task or file_task
    cls = config_class(schema, task, str(p))
    task = task or _schema_task(cls)
    if task is not None:
        data["task"] = task
    return from_dict(cls, data)


def config_from_dict(data: dict, schema: Schema) -> Any:
    """Rebuild a config saved by :func:`save_config` (or stored in checkpoint metadata)."""
    if not isinstance(data, dict):
        raise ConfigError(f"saved config must be a mapping, got {type(data).__name__}")
    return from_dict(config_class(schema, data.get("task"), "saved config"), dict(data))


def dump_config(cfg: Any) -> str:
    return yaml.safe_dump(plain(to_dict(cfg)), sort_keys=False)


def plain(x: Any) -> Any:
    """Tuples -> lists, recursively (JSON/YAML have no tuples; a saved config equals a trainer-written one)."""
    if isinstance(x, dict):
        return {k: plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    return x


def save_config(cfg: Any, path: str | Path) -> None:
    atomic_write_text(Path(path), dump_config(cfg))
