"""Loading of untrusted YAML: tenant manifests come from units, not from the county team.

PyYAML's SafeLoader already refuses arbitrary Python tags; on top of that this loader refuses
anchors and aliases (the "billion laughs" expansion), duplicate keys (which YAML silently
resolves to the last one, hiding what a reviewer saw), deep nesting and oversized files.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

MAX_BYTES = 64 * 1024
MAX_DEPTH = 20


class YamlRefused(ValueError):
    """The document is not acceptable YAML for a manifest."""


# libyaml does the scanning and parsing in C: loading a county of 1,000 manifests is dominated
# by it, and the pure-Python parser is ten times slower.
_Base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


_STR = "tag:yaml.org,2002:str"


class _StrictLoader(_Base):  # type: ignore[misc, valid-type]
    def construct_mapping(self, node, deep=False):  # type: ignore[override]
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if not (isinstance(key_node, yaml.ScalarNode) and key_node.tag == _STR):
                key = self.construct_object(key_node, deep=True)
                raise YamlRefused(
                    f"line {key_node.start_mark.line + 1}: keys must be strings, got {key!r}"
                )
            key = key_node.value
            if key in seen:
                raise YamlRefused(f"line {key_node.start_mark.line + 1}: duplicate key {key!r}")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_OPEN = (yaml.MappingStartEvent, yaml.SequenceStartEvent)
_CLOSE = (yaml.MappingEndEvent, yaml.SequenceEndEvent)


def _check_events(text: str) -> None:
    """Refuse anchors, aliases and deep nesting from the event stream, before any node graph
    is built (so an alias bomb is never expanded)."""
    depth = 0
    for event in yaml.parse(text, Loader=_Base):
        line = event.start_mark.line + 1
        if isinstance(event, yaml.AliasEvent):
            raise YamlRefused(f"line {line}: YAML aliases (*{event.anchor}) are not allowed")
        if getattr(event, "anchor", None):
            raise YamlRefused(f"line {line}: YAML anchors (&{event.anchor}) are not allowed")
        if isinstance(event, _OPEN):
            depth += 1
            if depth > MAX_DEPTH:
                raise YamlRefused(f"line {line}: nesting deeper than {MAX_DEPTH}")
        elif isinstance(event, _CLOSE):
            depth -= 1


def _check_depth(value: Any) -> None:
    stack = [(value, 0)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, (dict, list)):
            if depth + 1 > MAX_DEPTH:
                raise YamlRefused(f"nesting deeper than {MAX_DEPTH}")
            stack.extend((c, depth + 1) for c in (v.values() if isinstance(v, dict) else v))


def loads(text: str) -> Any:
    """Parse one YAML document with the restrictions above."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        raise YamlRefused(f"file is larger than {MAX_BYTES // 1024} KiB")
    try:
        # Anchors and aliases are spelled with & and *: a text with neither cannot hold one,
        # and its nesting is measured on what was built (the event pass parses the whole text
        # a second time; a county of 5,000 manifests spent a quarter of its load in it).
        plain = "&" not in text and "*" not in text
        if not plain:
            _check_events(text)
        docs = list(yaml.load_all(text, Loader=_StrictLoader))
        if plain:
            for doc in docs:
                _check_depth(doc)
    except YamlRefused:
        raise
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise YamlRefused(f"{where}not valid YAML ({problem})") from None
    except RecursionError:
        raise YamlRefused("nesting too deep") from None
    except ValueError:                       # an integer of thousands of digits
        raise YamlRefused("a number is too long (more than 4,300 digits)") from None
    if not docs:
        return None
    if len(docs) != 1:
        raise YamlRefused(f"expected exactly one YAML document, found {len(docs)}")
    return docs[0]


def check_size(size: int) -> None:
    """Refuse a file of `size` bytes if it is larger than a manifest may be."""
    if size > MAX_BYTES:
        raise YamlRefused(f"file is {size} bytes, larger than {MAX_BYTES // 1024} KiB")


def read_file(path: Path) -> bytes:
    """A manifest's bytes, refusing an oversized file before reading it whole."""
    check_size(path.stat().st_size)
    return path.read_bytes()


def decode(raw: bytes) -> str:
    """The text of a file's bytes, line ends read as text files are (\\r\\n and \\r as \\n)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise YamlRefused(f"file is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    return text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text


def load_file(path: Path) -> Any:
    """Read and parse a file, refusing oversized files before reading them whole."""
    return loads(decode(read_file(path)))
