"""YAML and JSON that someone else wrote, read within fixed bounds.

A rules file or a license comes from a file or an upload, so nothing in it may
cost more than its size suggests. The text is limited in bytes and must be
UTF-8; its nesting depth and number of values are counted while the parser
reads, before any value is built, with every YAML alias counted as the whole
node it repeats (so an alias bomb is refused, not expanded); numbers are
limited in digits; a key may appear once per mapping. Every refusal is a
``ConfigError`` saying where: a path such as ``rules[0].rows`` and the line.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent, CollectionStartEvent, ScalarEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.resolver import Resolver

from crmroute.errors import ConfigError

MAX_BYTES = 5 * 1024 * 1024
MAX_DEPTH = 32  # nested lists and mappings; a rules file needs about 6
MAX_VALUES = 100_000  # keys, scalars, lists and mappings, aliases expanded
MAX_NUMBER_CHARS = 64

_INT_TAG, _FLOAT_TAG, _MERGE_TAG = (f"tag:yaml.org,2002:{t}" for t in ("int", "float", "merge"))


def read(path: str | Path, *, limit: int = MAX_BYTES) -> str:
    """The text of the file at ``path``, or ``ConfigError`` saying why it cannot be read."""
    try:
        with open(path, "rb") as file:
            data = file.read(limit + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}", field="file") from None
    return decode(data, limit=limit)


def decode(data: bytes, *, limit: int = MAX_BYTES) -> str:
    """``data`` as text: at most ``limit`` bytes of UTF-8 (a BOM is dropped), no NUL."""
    if len(data) > limit:
        raise too_large(limit)
    nul = data.find(b"\x00")
    if nul >= 0:
        raise ConfigError(f"not text: a NUL byte at offset {nul} (a binary or UTF-16 file?)", field="file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text: byte 0x{data[exc.start]:02x} at offset {exc.start}", field="file") from None


def too_large(limit: int) -> ConfigError:
    size = f"{limit // (1024 * 1024)} MB" if limit >= 1024 * 1024 else f"{limit // 1024} KB"
    return ConfigError(f"larger than {size}", field="file")


# --- YAML ----------------------------------------------------------------------

if yaml.__with_libyaml__:  # libyaml reads the events, our composer below counts them
    from yaml._yaml import CParser

    class _Events(CParser):
        pass

else:  # pragma: no cover - PyYAML built without libyaml
    from yaml.parser import Parser
    from yaml.reader import Reader
    from yaml.scanner import Scanner

    class _Events(Reader, Scanner, Parser):  # type: ignore[no-redef]
        def __init__(self, stream: str) -> None:
            Reader.__init__(self, stream)
            Scanner.__init__(self)
            Parser.__init__(self)


class _BoundedLoader(Composer, _Events, SafeConstructor, Resolver):
    """PyYAML's safe loader with a composer that refuses what is out of bounds."""

    def __init__(self, stream: str) -> None:
        _Events.__init__(self, stream)
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        self.path: list[str] = []
        self.depth = 0
        self.values = 0
        self.expanded: dict[str, tuple[int, int]] = {}  # anchor -> (values, depth below it)
        self.deepest = 0
        self.keys: dict[int, set[tuple[str, str]]] = {}  # id(mapping node) -> keys so far

    def refuse(self, message: str, event: Any) -> None:
        path = "".join(self.path).lstrip(".") or "file"
        line = f"line {event.start_mark.line + 1}: " if event.start_mark else ""
        raise ConfigError(line + message, field=path)

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        self.path.append(_step(parent, index))
        try:
            event = self.peek_event()
            if isinstance(event, AliasEvent):
                return self._alias(parent, index, event)
            if isinstance(parent, MappingNode) and isinstance(index, ScalarNode) and index.tag != _MERGE_TAG:
                seen = self.keys.setdefault(id(parent), set())
                if (index.tag, index.value) in seen:
                    self.refuse(f"duplicate key {index.value!r}", event)
                seen.add((index.tag, index.value))
            values_before, depth_before, outer_deepest = self.values, self.depth, self.deepest
            self._count(1, event)
            if isinstance(event, CollectionStartEvent):
                self.depth += 1
                if self.depth > MAX_DEPTH:
                    self.refuse(f"nested more than {MAX_DEPTH} levels deep", event)
            if event.tag not in (None, "!") and event.tag not in self.yaml_constructors:
                self.refuse(f"unknown tag {event.tag}", event)  # here, where the line is still known
            if isinstance(event, ScalarEvent) and len(event.value) > MAX_NUMBER_CHARS:
                tag = self.resolve(ScalarNode, event.value, event.implicit) if event.tag in (None, "!") else event.tag
                if tag in (_INT_TAG, _FLOAT_TAG):
                    self.refuse(f"a number of more than {MAX_NUMBER_CHARS} characters", event)
            self.deepest = self.depth
            node = super().compose_node(parent, index)
            node.start_mark = node.end_mark = None  # a third of a node's memory; errors come from here
            self.keys.pop(id(node), None)
            if event.anchor is not None:
                self.expanded[event.anchor] = (self.values - values_before, self.deepest - depth_before)
            self.depth = depth_before
            self.deepest = max(outer_deepest, self.deepest)
            return node
        finally:
            self.path.pop()

    def _alias(self, parent: Node | None, index: Any, event: AliasEvent) -> Node:
        if event.anchor in self.anchors and event.anchor not in self.expanded:
            self.refuse(f"alias *{event.anchor} is inside the node it names", event)
        values, below = self.expanded.get(event.anchor, (0, 0))
        if self.depth + below > MAX_DEPTH:
            self.refuse(f"alias *{event.anchor} nests more than {MAX_DEPTH} levels deep", event)
        self.deepest = max(self.deepest, self.depth + below)
        self._count(values, event)
        return super().compose_node(parent, index)  # an undefined alias is PyYAML's error

    def _count(self, values: int, event: Any) -> None:
        self.values += values
        if self.values > MAX_VALUES:
            self.refuse(f"more than {MAX_VALUES} values (aliases counted in full)", event)


def _step(parent: Node | None, index: Any) -> str:
    if isinstance(parent, SequenceNode):
        return f"[{index}]"
    if isinstance(parent, MappingNode) and isinstance(index, ScalarNode):
        return f".{index.value}"
    return ""


def load_yaml(text: str) -> Any:
    """The value of one YAML document, within the bounds above."""
    loader = _BoundedLoader(text)
    try:
        return loader.get_single_data()
    except (yaml.YAMLError, ValueError, OverflowError) as exc:  # ValueError: e.g. a date 2024-13-01
        raise ConfigError(f"not valid YAML: {exc}", field="file") from None
    finally:
        loader.dispose()


# --- JSON ----------------------------------------------------------------------

# One token per match: a string (and the colon that makes it a key), a bracket, a
# comma, or a bare scalar (number, true, false, null). Only used to count and to
# find repeated keys; json.loads then parses the text it has passed.
_JSON_TOKEN = re.compile(r'"([^"\\]*(?:\\.[^"\\]*)*)"(\s*:)?|([\[{])|([\]}])|(,)|[^\s,:\[\]{}"]+', re.DOTALL)


def load_json(text: str) -> Any:
    """The value of a JSON text, within the bounds above."""
    _scan_json(text)
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}", field="file") from None
    except ValueError as exc:
        raise ConfigError(f"not valid JSON: {exc}", field="file") from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _scan_json(text: str) -> None:
    # Each open container: [its path step, last list index (lists) or None, keys seen (objects) or None].
    stack: list[list[Any]] = []
    key = ""  # the key whose value comes next, in an object
    values = 0

    def step() -> str:
        top = stack[-1] if stack else None
        if top is None:
            return ""
        if top[2] is None:
            top[1] += 1
            return f"[{top[1]}]"
        return f".{key}"

    def refuse(message: str, at: int, last: str = "") -> None:
        path = ("".join(frame[0] for frame in stack) + last).lstrip(".") or "file"
        raise ConfigError(f"line {text.count(chr(10), 0, at) + 1}: {message}", field=path)

    for match in _JSON_TOKEN.finditer(text):
        string, colon, opening, closing, comma = match.groups()
        if comma:
            continue
        if closing:
            if stack:
                stack.pop()
            continue
        values += 1
        if values > MAX_VALUES:
            refuse(f"more than {MAX_VALUES} values", match.start())
        if colon and stack and stack[-1][2] is not None:
            key = _unescape(string)
            if key in stack[-1][2]:
                refuse(f"duplicate key {key!r}", match.start(), f".{key}")
            stack[-1][2].add(key)
        elif opening:
            stack.append([step(), -1, None if opening == "[" else set()])
            if len(stack) > MAX_DEPTH:
                refuse(f"nested more than {MAX_DEPTH} levels deep", match.start())
        else:
            last = step()
            if string is None and len(match.group()) > MAX_NUMBER_CHARS:
                refuse(f"a number of more than {MAX_NUMBER_CHARS} characters", match.start(), last)


def _unescape(string: str) -> str:
    if "\\" not in string:
        return string
    try:
        return json.loads(f'"{string}"')
    except ValueError:  # json.loads below says what is wrong with it
        return string
