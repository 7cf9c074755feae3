"""Reading a suite file and applying ``--set key.path=value`` overrides to it, before validation.

When a value does not parse, the message says what the key takes, from the JSON schema of the
suite kind's root model, e.g. "matrix.max_iter takes an array of integers ≥ 1, e.g. --set
'matrix.max_iter=[20]'".
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from deqbench.errors import ConfigError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib


def read_suite_file(path: Path) -> dict[str, Any]:
    """The parsed TOML of ``path``; a missing, non-UTF-8 or invalid file is a `ConfigError`."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such suite file")
    try:
        # utf-8-sig: a byte-order mark (as Windows editors write) is accepted and dropped
        return tomllib.loads(path.read_text(encoding="utf-8-sig"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a UTF-8 text file ({exc.reason})") from None


def apply_override(data: dict[str, Any], item: str, path: Path, schema: type[BaseModel]) -> None:
    """Apply ``key.path=value`` (value parsed as TOML, else taken as a string) to ``data``.

    ``schema``, the root model of the file's kind, describes the key when a value meant as TOML
    does not parse. Its class attribute ``dotted_tables`` (when it has one) names the tables
    whose keys are themselves dotted keys of the file, True for those that sweep them."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected key.path=value, e.g. matrix.max_iter=20")
    # A quoted part keeps its dots: matrix."deq.solver" is the training matrix's dotted key.
    parts = [q.strip('"') for q in re.findall(r'"[^"]*"|[^.]+', key.strip())]
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError as exc:
        if raw.strip()[:1] in ("[", "{", '"', "'"):  # meant as TOML, not as a bare string
            raise ConfigError(
                f"{path}: --set {item!r}: the value did not parse as TOML ({exc}); "
                f"{_expected_value(schema, key.strip(), parts, raw)}"
            ) from None
        value = raw
    node: Any = data
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        where = ".".join(parts[: i + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(
                    f"{path}: --set {key}: {where!r} needs an index below {len(node)}"
                )
            if last:
                node[int(part)] = value
            node = node[int(part)]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
        else:
            raise ConfigError(f"{path}: --set {key}: {where!r} is not a table or list")


def _expected_value(root: type[BaseModel], key: str, parts: Sequence[str], raw: str) -> str:
    """What a ``--set`` of ``key`` (split into ``parts``) should look like, its value ``raw``
    having failed to parse: the type the suite's schema ``root`` gives the key and an example,
    e.g. "matrix.max_iter takes an array of integers ≥ 1, e.g. --set 'matrix.max_iter=[20]'"."""
    schema = root.model_json_schema()
    dotted: Mapping[str, bool] = getattr(root, "dotted_tables", {})
    path, sweep = list(parts), False
    if len(path) == 2 and path[0] in dotted:
        path, sweep = path[1].split("."), dotted[path[0]]  # a sweep of a dotted key
    node: Any = schema
    for part in path:
        node = _deref(node, schema)
        extra = node.get("additionalProperties")
        if part in node.get("properties", {}):
            node = node["properties"][part]
        elif isinstance(extra, dict):
            node = extra
        elif "items" in node and part.isdigit():
            node = node["items"]
        else:
            node = {}  # an option of a registered name: the schema does not know its type
            break
    if sweep:
        node = {"type": "array", "items": node}
    words, example = _in_words(node, schema), _example(node, schema, raw)
    if words:
        return f"{key} takes {words}" + (f", e.g. --set '{key}={example}'" if example else "")
    quoted = _quoted_words(raw)  # the type is unknown: at least quote its strings
    return "quote strings inside it" + (f", e.g. --set '{key}={quoted}'" if quoted else "")


def _quoted_words(raw: str) -> str:
    """The bare words of ``raw`` as a TOML array of strings ('[anderson' → '["anderson"]'),
    or "" when it has none."""
    words = re.findall(r"[A-Za-z_][\w.-]*", raw)
    return "[" + ", ".join(f'"{w}"' for w in words) + "]" if words else ""


def _deref(node: Mapping[str, Any], schema: Mapping[str, Any]) -> Mapping[str, Any]:
    """A JSON-schema node with its ``$ref`` (to ``#/$defs/Name``) followed, and null dropped
    from an ``anyOf`` (TOML has no null)."""
    if "$ref" in node:
        node = schema["$defs"][node["$ref"].rsplit("/", 1)[-1]]
    options = [n for n in node.get("anyOf", ()) if n.get("type") != "null"]
    return _deref(options[0], schema) if len(options) == 1 else node


def _in_words(node: Mapping[str, Any], schema: Mapping[str, Any], many: bool = False) -> str:
    """A JSON-schema type in words ("an integer ≥ 1"; with ``many``, "integers ≥ 1"); "" when
    it says nothing (an untyped array item)."""
    node = _deref(node, schema)
    if "anyOf" in node:
        return " or ".join(filter(None, (_in_words(n, schema, many) for n in node["anyOf"])))
    if "enum" in node:
        return ("strings among " if many else "one of ") + ", ".join(f'"{v}"' for v in node["enum"])
    kind = node.get("type")
    if kind == "array":
        items = _in_words(node.get("items", {}), schema, many=True)
        return ("arrays" if many else "an array") + (f" of {items}" if items else "")
    if kind not in _WORDS:
        return ""
    if "format" in node:  # "a duration"
        return f"{node['format']}s" if many else f"a {node['format']}"
    bounds = {"minimum": "≥", "exclusiveMinimum": ">", "maximum": "≤", "exclusiveMaximum": "<"}
    return _WORDS[kind][many] + "".join(f" {s} {node[b]}" for b, s in bounds.items() if b in node)


#: A JSON-schema type in words: (one, many).
_WORDS = {
    "integer": ("an integer", "integers"),
    "number": ("a number", "numbers"),
    "string": ("a string", "strings"),
    "boolean": ("true or false", "booleans"),
    "object": ("a table", "tables"),
}


def _example(node: Mapping[str, Any], schema: Mapping[str, Any], raw: str) -> str:
    """An example TOML value of the type ``node``; strings are the bare words of ``raw``
    quoted, when it has some ('[anderson]' → '["anderson"]'). "" when there is none."""
    node = _deref(node, schema)
    if "anyOf" in node:
        return _example(node["anyOf"][0], schema, raw)
    if "enum" in node or "examples" in node:
        return json.dumps((node.get("enum") or node["examples"])[0])
    kind = node.get("type")
    if kind == "array":
        items = _deref(node.get("items", {}), schema)
        strings = items.get("type") in ("string", None) and "enum" not in items
        if strings and _quoted_words(raw):  # a string, or any value (an option's sweep)
            return _quoted_words(raw)
        item = _example(items, schema, raw)
        return f"[{item}]" if item else ""
    if kind == "integer":  # 20, or the nearest bound
        return str(min(max(20, node.get("minimum", 20)), node.get("maximum", 20)))
    return {"number": "0.001", "string": '"name"', "boolean": "true"}.get(kind, "")
