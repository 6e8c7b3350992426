"""Config files read strictly: a mapping key given twice is an error, not a silent override.

YAML loaders keep the last of two equal keys, so a second ``extraction:`` block silently drops
the first one's settings. :func:`check_no_duplicate_keys` walks the composed YAML (before
anything is constructed) and names each key given twice with its path and both lines. Keys
brought in by a merge key (``<<: *defaults``) are defaults: overriding one is not a duplicate.

Imports only yaml (and json), so that ``rules/common.smk`` can call it on every parse.
"""

from __future__ import annotations

import json
import os

import yaml

from .errors import InputError

MERGE_TAG = "tag:yaml.org,2002:merge"
FAST_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's parser, where PyYAML has it


def _key_value(node: yaml.Node, constructor: yaml.constructor.SafeConstructor):
    """What the key becomes once loaded (``yes`` and ``true`` are the same key), or its source
    text where the safe constructor cannot build it (python tags, unhashable keys)."""
    if not isinstance(node, yaml.ScalarNode):
        return ("node", id(node))
    try:
        value = constructor.construct_object(node, deep=True)
        hash(value)
        return value
    except (yaml.YAMLError, TypeError):
        return ("source", node.tag, node.value)


def _label(node: yaml.Node) -> str:
    return str(node.value) if isinstance(node, yaml.ScalarNode) else f"<{node.tag}>"


def _duplicates(root: yaml.Node) -> list[tuple[str, int, int]]:
    """(key path, first line, second line) for every key given twice in one mapping."""
    constructor = yaml.SafeLoader("")
    found, seen = [], set()
    stack = [(root, "")]
    while stack:
        node, path = stack.pop()
        if id(node) in seen:  # an alias: its anchor was checked where it was defined
            continue
        seen.add(id(node))
        children = []
        if isinstance(node, yaml.MappingNode):
            first_line = {}
            for key, value in node.value:
                if key.tag == MERGE_TAG:  # merged keys are defaults; the mapping merged is checked itself
                    children.append((value, path))
                    continue
                name = f"{path}.{_label(key)}" if path else _label(key)
                line = key.start_mark.line + 1
                identity = _key_value(key, constructor)
                if identity in first_line:
                    found.append((name, first_line[identity], line))
                else:
                    first_line[identity] = line
                children.append((value, name))
        elif isinstance(node, yaml.SequenceNode):
            children = [(item, f"{path}[{index}]") for index, item in enumerate(node.value)]
        stack.extend(reversed(children))  # document order, so an anchor is met before its aliases
    return found


def _json_duplicates(text: str) -> list[tuple[str, None, None]]:
    found = []

    def pairs(items):
        keys = [key for key, _ in items]
        found.extend((key, None, None) for index, key in enumerate(keys) if key in keys[:index])
        return dict(items)

    json.loads(text, object_pairs_hook=pairs)
    return found


def check_no_duplicate_keys(path: str | os.PathLike) -> None:
    """Raise :class:`InputError` naming ``path``, each key given twice in one mapping (as a
    dotted path such as ``models.vit.kwargs.depth``) and both of its lines."""
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    try:
        found = [dup for document in yaml.compose_all(text, Loader=FAST_LOADER) for dup in _duplicates(document)]
    except yaml.YAMLError as err:
        try:  # Snakemake reads JSON config files too (JSON is not quite a subset of YAML 1.1)
            found = _json_duplicates(text)
        except ValueError:
            raise InputError(f"Config file {path} is not valid YAML: {err}") from None
    if found:
        where = "; ".join(
            f"'{name}' on lines {first} and {second}" if first else f"'{name}' (JSON: lines not located)"
            for name, first, second in found
        )
        raise InputError(
            f"Config file {path} gives {'a key' if len(found) == 1 else 'keys'} twice in the same mapping: "
            f"{where}. YAML keeps only the last one, so the earlier settings would be dropped silently; "
            f"merge the two into one."
        )


def load_strict(path: str | os.PathLike):
    """The content of a YAML file, after :func:`check_no_duplicate_keys`."""
    check_no_duplicate_keys(path)
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)
