"""The configuration reference, generated from kit/config.py and the learners' settings (kit/learners/*.py).

MkDocs runs this file as a hook (mkdocs.yml) on every build: the tables replace MARKER in docs/configuration.md.
`python docs/config_reference.py` prints them. Meanings come from the comments where each key is declared (see
kit/config.py's docstring), ranges from its range rules; a key or section without a meaning stops the build.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import tokenize
import types
import typing
from typing import Any, Literal

import yaml

PAGE = "configuration.md"
MARKER = "<!-- generated: config reference -->"


class UndocumentedError(ValueError):
    """A key or section has no meaning in its source."""


def field_comments(source: str) -> dict[tuple[str, str], str]:
    """(class name, field name) -> the field's meaning, read from the comments around its declaration."""
    fields = [(cls.name, node) for cls in ast.walk(ast.parse(source)) if isinstance(cls, ast.ClassDef)
              for node in cls.body if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)]
    trailing, alone = _comments(source)
    starts = {node.lineno: (cls, node) for cls, node in fields}
    ends = {node.end_lineno: (cls, node) for cls, node in fields}
    meanings: dict[tuple[str, str], list[str]] = {}
    for cls, node in fields:
        meanings[(cls, node.target.id)] = [trailing[line] for line in range(node.lineno, node.end_lineno + 1)
                                           if line in trailing]
    def has_trailing(node: ast.AnnAssign) -> bool:
        return any(line in trailing for line in range(node.lineno, node.end_lineno + 1))

    for block in _blocks(alone):
        text = " ".join(alone[line] for line in block)
        above = ends.get(block[0] - 1)
        below = starts.get(block[-1] + 1)
        # A block describes the key below it, unless it sits right below a key with a trailing comment and the key
        # below has one of its own: then it continues the upper one. A blank line above a block ends that question.
        if above is not None and has_trailing(above[1]) and (below is None or has_trailing(below[1])):
            meanings[(above[0], above[1].target.id)].append(text)
        elif below is not None:
            meanings[(below[0], below[1].target.id)].insert(0, text)
    return {key: " ".join(parts) for key, parts in meanings.items()}


def _comments(source: str) -> tuple[dict[int, str], dict[int, str]]:
    """Comments after code, and comments alone on their line, by line number, without the `#`."""
    lines = source.splitlines()
    trailing, alone = {}, {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            row, col = token.start
            text = token.string.lstrip("#").strip()
            (alone if not lines[row - 1][:col].strip() else trailing)[row] = text
    return trailing, alone


def _blocks(alone: dict[int, str]) -> list[list[int]]:
    """Runs of consecutive comment-only lines."""
    blocks: list[list[int]] = []
    for line in sorted(alone):
        if blocks and blocks[-1][-1] == line - 1:
            blocks[-1].append(line)
        else:
            blocks.append([line])
    return blocks


def type_name(tp: Any) -> str:
    """A config type as a user writes it in YAML: `int`, `list of str`, `int or 'auto'`, `one of: a, b`."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is type(None):
        return "null"
    if origin is Literal:
        return f"'{args[0]}'" if len(args) == 1 else "one of: " + ", ".join(str(a) for a in args)
    if origin is list:
        inner = type_name(args[0])
        return f"list of: {inner.removeprefix('one of: ')}" if inner.startswith("one of") else f"list of {inner}"
    if origin is dict:
        return f"mapping {type_name(args[0])} -> {type_name(args[1])}"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in args)
    return tp.__name__


def default_text(f: dataclasses.Field) -> str:
    """The field's default as YAML, or — for a key without one."""
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "—"
    text = yaml.safe_dump(value, default_flow_style=True, width=1000).strip()
    return f"`{text.removesuffix('...').strip()}`"


def sections(root: type, prefix: str = "") -> list[tuple[str, type, list[dataclasses.Field]]]:
    """(dotted section name, its dataclass, its value fields) for `root` and every section below it."""
    hints = typing.get_type_hints(root)
    values = [f for f in dataclasses.fields(root) if not dataclasses.is_dataclass(hints[f.name])]
    found = [(prefix, root, values)]
    for f in dataclasses.fields(root):
        if dataclasses.is_dataclass(hints[f.name]):
            found += sections(hints[f.name], f"{prefix}{f.name}.")
    return found


def markdown(root: type, ranges: dict[str, str]) -> str:
    """The reference for dataclass `root`: a table per section, every key with its meaning."""
    modules = {inspect.getmodule(cls) for _, cls, _ in sections(root)}  # a learner's section is in its module
    meanings = {k: v for m in modules for k, v in field_comments(inspect.getsource(m)).items()}
    out = []
    for prefix, cls, values in sections(root):
        doc = inspect.getdoc(cls) if cls.__doc__ and not cls.__doc__.startswith(f"{cls.__name__}(") else None
        if prefix and not doc:
            raise UndocumentedError(f"section {prefix[:-1]!r} ({cls.__name__}) has no docstring")
        out += [f"## {f'`{prefix[:-1]}`' if prefix else 'Top level'}", "", doc or "", "",
                "| key | type | default | range | meaning |", "|---|---|---|---|---|"]
        hints = typing.get_type_hints(cls)
        for f in values:
            key, meaning = prefix + f.name, meanings.get((cls.__name__, f.name))
            if not meaning:
                raise UndocumentedError(f"config key {key!r} ({cls.__name__}.{f.name}) has no comment saying what "
                                        f"it means; add one on its line in {inspect.getsourcefile(cls)}")
            cells = [f"`{key}`", type_name(hints[f.name]), default_text(f), ranges.get(key, "—"), meaning]
            out.append("| " + " | ".join(c.replace("|", "\\|").replace("<", "&lt;") for c in cells) + " |")
        out.append("")
    return "\n".join(out)


def kit_ranges() -> dict[str, str]:
    """Each ranged key of kit's config -> what its check allows."""
    from kit import config

    default = config.Config(competition="example", task="tabular", classes=["a", "b"])
    found = {key: expected for key, _value, _test, expected in config._range_rules(default)}
    found.update({key: f"from {_number(low)} to {_number(high)}"
                  for key, _value, low, high in config._learner_rules(default)})
    return found


def _number(x: float) -> str:
    """1000000 as 1,000,000 and 1e-06 as 1e-06: whole numbers in full, others as Python's shortest form."""
    return f"{int(x):,}" if float(x).is_integer() else f"{x:g}"


def kit_reference() -> str:
    from kit.config import Config

    return markdown(Config, kit_ranges())


def on_page_markdown(text: str, page: Any, config: Any, files: Any) -> str:
    """MkDocs hook: the configuration page gets the tables generated from kit/config.py."""
    from mkdocs.exceptions import PluginError

    if page.file.src_uri != PAGE:
        return text
    if MARKER not in text:
        raise PluginError(f"configuration reference: docs/{PAGE} lost the line {MARKER} where the tables go")
    try:
        return text.replace(MARKER, kit_reference())
    except UndocumentedError as exc:
        raise PluginError(f"configuration reference: {exc}") from None


if __name__ == "__main__":
    print(kit_reference())
