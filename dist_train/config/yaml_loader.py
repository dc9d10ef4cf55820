"""The one YAML reader of configs and overrides, hardened against input that would crash or exhaust the loader.

PyYAML's safe loader is safe from code execution but not from size: its composer recurses once per nesting level
(a list nested ~500 deep is a `RecursionError`), and aliases share one object, so 480 bytes of `&a`/`*a` can stand
for 10^8 items that any later walk (type checks, an error message repeating the value) expands. This loader refuses,
before a value is built: nesting deeper than MAX_DEPTH, more than MAX_NODES nodes once aliases are expanded,
recursive aliases and duplicate keys (PyYAML keeps the last one silently). Dates stay text.
"""

from __future__ import annotations

from typing import Any

import yaml

from dist_train.errors import UsageError, key_text

MAX_DEPTH = 32  # levels of nesting (a config needs ~4; DeepSpeed's own config ~5)
MAX_NODES = 100_000  # scalars, lists and mappings after alias expansion (a config has a few hundred)
MAX_FILE_BYTES = 16 * 1024 * 1024


class YamlRefused(UsageError):
    """Parsed but too big or ambiguous to use: never taken as plain text, unlike malformed YAML in an override."""


class _Loader(yaml.SafeLoader):
    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise YamlRefused(f"{_line(self.peek_event())}nested more than {MAX_DEPTH} levels deep")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def get_single_node(self):
        node = super().get_single_node()
        if node is not None:
            _check_expanded(node)
        return node

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _ in node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                    ident = (key_node.tag, key_node.value)
                    if ident in seen:
                        raise YamlRefused(f"{_line(key_node)}duplicate key '{key_node.value[:100]}' "
                                          "(give each key once)")
                    seen.add(ident)
        return super().construct_mapping(node, deep=deep)


# Dates stay text: no config value is a date, and `run_dir: 2024-01-01` must not become datetime.date(2024, 1, 1).
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _line(item) -> str:
    mark = getattr(item, "start_mark", None)
    return f"line {mark.line + 1}: " if mark is not None else ""


def _children(node) -> list:
    if isinstance(node, yaml.SequenceNode):
        return node.value
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _check_expanded(root) -> None:
    """Size and depth of the value the node graph stands for, aliases expanded; iterative, memoised per node, so
    a bomb is measured in the time of its few distinct nodes."""
    measured: dict[int, tuple[int, int]] = {}  # id(node) -> (nodes, depth)
    open_nodes: set[int] = set()
    stack = [(root, False)]
    while stack:
        node, finished = stack.pop()
        nid = id(node)
        if finished:
            open_nodes.discard(nid)
            sizes = [measured[id(child)] for child in _children(node)]
            nodes = 1 + sum(n for n, _ in sizes)
            depth = 1 + max((d for _, d in sizes), default=0)
            if nodes > MAX_NODES:
                raise YamlRefused(f"{_line(node)}the value holds more than {MAX_NODES:,} items once its aliases are "
                                  "expanded (a config has a few hundred)")
            if depth > MAX_DEPTH:
                raise YamlRefused(f"{_line(node)}nested more than {MAX_DEPTH} levels deep once its aliases are "
                                  "expanded")
            measured[nid] = (nodes, depth)
            continue
        if nid in measured:
            continue
        if nid in open_nodes:
            raise YamlRefused(f"{_line(node)}an alias refers to a value that contains it (a recursive alias)")
        open_nodes.add(nid)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in measured)


def parse(text: str) -> Any:
    """The value of one YAML document. Raises YamlRefused (a UsageError, message starting with 'line N: ' where
    known) for the limits above, and yaml.YAMLError / ValueError for malformed text."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader


def check_plain(value: Any) -> None:
    """The same limits for a value that did not come from one YAML text (a dict given to `from_dict`, or a file
    with overrides applied): depth, size, no cycles; the message names the key where the limit is crossed.
    Iterative, so a value too deep for recursion is reported, not crashed on."""
    count, stack, open_ids = 0, [(value, "", 1, False)], set()
    while stack:
        item, key, depth, finished = stack.pop()
        if finished:
            open_ids.discard(id(item))
            continue
        count += 1
        where = (key if len(key) <= 200 else key[:197] + "...") or "config"
        if count > MAX_NODES:
            raise YamlRefused(f"{where}: the config holds more than {MAX_NODES:,} items (a config has a few hundred)")
        if depth > MAX_DEPTH:
            raise YamlRefused(f"{where}: nested more than {MAX_DEPTH} levels deep")
        if isinstance(item, (dict, list, tuple)):
            if id(item) in open_ids:
                raise YamlRefused(f"{where}: a value contains itself")
            open_ids.add(id(item))
            stack.append((item, key, depth, True))
            if isinstance(item, dict):
                stack.extend((v, f"{key}.{key_text(k, 40)}" if key else key_text(k, 40), depth + 1, False)
                             for k, v in item.items())
            else:
                stack.extend((v, f"{key}[{i}]", depth + 1, False) for i, v in enumerate(item))


def unshared(value: Any) -> Any:
    """A copy in which no two places share one list or mapping (YAML aliases do), so that an override of one key
    never changes another. Bounded by MAX_NODES, so cheap."""
    if isinstance(value, dict):
        return {k: unshared(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unshared(v) for v in value]
    return value
