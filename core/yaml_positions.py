"""YAML read with the line and column of every key and value, and the problems found in it.

Why our own loader around PyYAML: marketers must read `file:line:column: what to write
instead`, while PyYAML's ``safe_load`` forgets positions. We compose the YAML into nodes and
build the data and a map path -> position (``Marks``) from the same walk.

The YAML dialect is YAML 1.1 without its traps: only true/false are booleans (so `NO`, the
country code of Norway, stays a text), numbers have no base 60 (so `10:00` is a time, not 600)
and no leading-zero octal (so a postcode `07500` stays a text). Duplicate keys are errors
instead of silently keeping the last one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

Path_ = tuple[Any, ...]  # a location in the data: keys and list indexes


# --------------------------------------------------------------------------
# Problems
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One thing to fix (or, as a warning, to know), at file:line:column (1-based)."""

    file: str
    line: int | None
    column: int | None
    message: str
    severity: str = "error"  # or "warning": reported, but does not fail `relance validate`

    def __str__(self) -> str:
        where = self.file
        if self.line:
            where += f":{self.line}" + (f":{self.column}" if self.column else "")
        kind = "warning: " if self.severity == "warning" else ""
        return f"{where}: {kind}{self.message}"


class SpecError(ValueError):
    """A campaign or segments file that cannot be used; ``problems`` says where and what to write."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


# --------------------------------------------------------------------------
# YAML with positions
# --------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans and numbers (see the module docstring)."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag.rsplit(":", 1)[-1] not in ("bool", "int", "float")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?(?:0|[1-9][0-9_]*)|0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"),
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^(?:[-+]?(?:0|[1-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?(?:0|[1-9][0-9_]*)[eE][-+]?[0-9]+|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)


@dataclass(frozen=True)
class Position:
    """Where a value sits: its own start, and the start of its key when it is a mapping value."""

    line: int
    column: int
    key_line: int | None = None
    key_column: int | None = None


Marks = dict[Path_, Position]

_YAML_HINTS = (
    ("cannot start any token", "indent with spaces, not tabs"),
    ("mapping values are not allowed", "put quotes around a text containing `: `, e.g. "
     'description: "Offre : -15 %", or check the indentation of this line'),
    ("could not find expected ':'", "each line of a mapping is `key: value`; check it and the line above"),
    ("expected <block end>", "keys of one mapping must start in the same column: check the indentation"),
    ("found unexpected end of stream", "close the quote opened here"),
    ("found undefined alias", "define the anchor (&name) before using it (*name)"),
    ("expected a single document", "keep one campaign per file: remove the `---` line"),
)  # fmt: skip


def _yaml_problem(file: str, exc: yaml.YAMLError) -> Problem:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    what = getattr(exc, "problem", None) or str(exc)
    text = f"{what} {getattr(exc, 'context', '') or ''}"
    hint = next((h for needle, h in _YAML_HINTS if needle in text), "check the indentation and the quotes")
    line, col = (mark.line + 1, mark.column + 1) if mark is not None else (None, None)
    return Problem(file, line, col, f"not valid YAML: {what}; {hint}")


class _Builder:
    """Builds plain data and the path -> position map from composed nodes, reporting duplicate keys."""

    def __init__(self, loader: _Loader, file: str) -> None:
        self.loader, self.file = loader, file
        self.marks: Marks = {}
        self.problems: list[Problem] = []
        self._depth = 0

    def build(self, node: yaml.Node, path: Path_, key: yaml.Node | None = None) -> Any:
        start = node.start_mark
        self.marks[path] = Position(
            start.line + 1,
            start.column + 1,
            key.start_mark.line + 1 if key is not None else None,
            key.start_mark.column + 1 if key is not None else None,
        )
        self._depth += 1
        try:
            if self._depth > 200:  # an alias that contains itself
                raise RecursionError
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, path)
            if isinstance(node, yaml.SequenceNode):
                return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
            return self.loader.construct_object(node, deep=True)
        finally:
            self._depth -= 1

    def _mapping(self, node: yaml.MappingNode, path: Path_) -> dict[Any, Any]:
        self.loader.flatten_mapping(node)  # `<<: *anchor` merge keys
        out: dict[Any, Any] = {}
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = self.loader.construct_object(key_node, deep=True)
            if not isinstance(key, str | int | float | bool) or key is None:
                mark = key_node.start_mark
                self.problems.append(
                    Problem(
                        self.file, mark.line + 1, mark.column + 1, "a key must be a plain name, e.g. `name:`"
                    )
                )
                continue
            if key in seen:
                mark = key_node.start_mark
                self.problems.append(
                    Problem(
                        self.file, mark.line + 1, mark.column + 1,
                        f"duplicate key `{key}` (also on line {seen[key]}): keep only one",
                    )
                )  # fmt: skip
                continue
            seen[key] = key_node.start_mark.line + 1
            out[key] = self.build(value_node, (*path, key), key_node)
        return out


def display_path(path: Path | str) -> str:
    """The path as the user should read it: relative to the working directory when inside it."""
    p = Path(path)
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)


def load_yaml(path: Path | str, text: str | None = None) -> tuple[Any, Marks]:
    """The data of a YAML file and the position of every value, or SpecError."""
    file = display_path(path)
    if text is None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise SpecError([Problem(file, None, None, "no such file; check the path")]) from None
        except UnicodeDecodeError as exc:
            raise SpecError(
                [Problem(file, None, None, f"not UTF-8 text ({exc.reason}); save it as UTF-8")]
            ) from None
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {(): Position(1, 1)}
        builder = _Builder(loader, file)
        data = builder.build(node, ())
    except yaml.YAMLError as exc:
        raise SpecError([_yaml_problem(file, exc)]) from None
    except RecursionError:
        raise SpecError([Problem(file, None, None, "an alias (*name) refers to itself; remove it")]) from None
    finally:
        loader.dispose()
    if builder.problems:
        raise SpecError(builder.problems)
    return data, builder.marks
