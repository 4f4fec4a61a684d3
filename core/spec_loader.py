"""Load campaign and segment YAML with the line and column of every key and value.

Why our own loader around PyYAML: marketers must read `file:line:column: what
to write instead`, while PyYAML's ``safe_load`` forgets positions and
pydantic only knows paths such as ``("audience", "all", 0, "gte")``. We compose
the YAML into nodes, build the data and a map path -> position from the same
walk, validate with pydantic, then translate each error's path into a position
and each error type into a sentence a non-programmer can act on.

The YAML with positions is core/yaml_positions.py; this module turns pydantic's
errors into sentences at those positions and loads campaign and segment files.

``load_campaign`` checks one file on its own (YAML, schema, cron, time zones,
windows); ``check_file`` also checks what it refers to (segments, templates,
fields, features, models) and renders each message, for ``relance validate``.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import yaml
from pydantic import BaseModel, Discriminator, ValidationError

from core.spec import (
    RULE_KINDS,
    RULE_TAGS,
    STEP_KINDS,
    STEP_TAGS,
    AllRule,
    AnyRule,
    Campaign,
    NotRule,
    SegmentsFile,
    nearest,
    rule_kind,
    step_kind,
)
from core.yaml_positions import Marks, Path_, Problem, SpecError, display_path, load_yaml

M = TypeVar("M", bound=BaseModel)


# --------------------------------------------------------------------------
# Pydantic errors -> problems
# --------------------------------------------------------------------------


@dataclass
class Located(Generic[M]):
    """A validated model with the positions of its source, for checks that point into the file."""

    value: M
    file: str
    marks: Marks

    def at(self, path: Path_, key: bool = False) -> tuple[int | None, int | None]:
        return position(self.marks, path, key)

    def problem(self, path: Path_, message: str, severity: str = "error", key: bool = False) -> Problem:
        line, col = self.at(path, key)
        return Problem(self.file, line, col, message, severity)


def position(marks: Marks, path: Path_, key: bool = False) -> tuple[int | None, int | None]:
    """Line and column of ``path`` (of its key with ``key=True``), else of its nearest known parent."""
    path = tuple(path)
    while path not in marks and path:
        path = path[:-1]
    pos = marks.get(path)
    if pos is None:
        return None, None
    if key and pos.key_line is not None:
        return pos.key_line, pos.key_column
    return pos.line, pos.column


def _unwrap(annotation: Any) -> tuple[Any, Any]:
    """(inner type, the discriminator function of a rule or step union, else None), Optional and
    Annotated peeled off."""
    chooser = None
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            for m in annotation.__metadata__:
                if isinstance(m, Discriminator):
                    chooser = m.discriminator
            annotation = typing.get_args(annotation)[0]
            continue
        if origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) == 1:
                annotation = args[0]
                continue
        return annotation, chooser


# The tagged unions of the language: discriminator -> (tag suffix, the model of each kind).
_UNIONS: dict[Any, tuple[str, dict[str, type[BaseModel]]]] = {
    rule_kind: (" rule", RULE_KINDS),
    step_kind: (" step", STEP_KINDS),
}


def model_at(root: type[BaseModel], data: Any, path: Path_) -> type[BaseModel] | None:
    """The pydantic model that validates the mapping at ``path`` (rules and steps resolved by their key)."""
    annotation: Any = root
    node = data
    for step in (*path, None):
        annotation, chooser = _unwrap(annotation)
        if chooser in _UNIONS:
            suffix, kinds = _UNIONS[chooser]
            kind = chooser(node)
            if kind is None:
                return None
            annotation = kinds[kind.removesuffix(suffix)]
        if step is None:
            break
        origin = typing.get_origin(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            found = next(
                (f for n, f in annotation.model_fields.items() if (f.alias or n) == step or n == step), None
            )
            if found is None:
                return None
            annotation = found.annotation
        elif origin is list and isinstance(step, int):
            annotation = typing.get_args(annotation)[0]
        elif origin is dict:
            annotation = typing.get_args(annotation)[1]
        else:
            return None
        node = node.get(step) if isinstance(node, dict) else node[step] if isinstance(node, list) else None
    annotation, _ = _unwrap(annotation)
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def keys_of(model: type[BaseModel]) -> list[str]:
    return [f.alias or n for n, f in model.model_fields.items()]


def _shown(value: Any) -> str:
    if isinstance(value, str):
        return value if len(value) <= 60 else value[:57] + "..."
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "(empty)"
    text = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=10_000).strip()
    text = text.removesuffix("...").strip()
    return text if len(text) <= 60 else text[:57] + "..."


def _name(path: Path_) -> str:
    """`sending_window.end`, `audience.all[0].gte`: how a location is named in messages."""
    out = ""
    for step in path:
        out += f"[{step}]" if isinstance(step, int) else (f".{step}" if out else str(step))
    return out or "the campaign"


def _data_path(data: Any, loc: tuple[Any, ...]) -> tuple[Path_, list[Any]]:
    """Split a pydantic ``loc`` into the path that exists in the data and what is left (missing keys...)."""
    path: list[Any] = []
    rest: list[Any] = []
    node = data
    for step in loc:
        if step in RULE_TAGS or step in STEP_TAGS:
            continue
        in_dict = isinstance(node, dict) and step in node
        in_list = isinstance(node, list) and isinstance(step, int) and 0 <= step < len(node)
        if not rest and (in_dict or in_list):
            path.append(step)
            node = node[step]
        else:
            rest.append(step)
    return tuple(path), rest


_TYPE_HINTS: dict[str, str] = {
    "int": "is not a whole number; write e.g. 3",
    "float": "is not a number; write digits only, e.g. 15 or 29.9 (no % or € sign)",
    "bool": "is not true or false; write true or false",
    "string": "is not a text; put it in quotes",
    "time": "is not a time; write HH:MM, e.g. 09:00",
    "datetime": "is not a date and time; write e.g. 2026-12-01T09:30:00",
    "date": "is not a date; write YYYY-MM-DD, e.g. 2024-01-31",
    "list": "is not a list; write [a, b] or one `- item` per line below the key",
    "tuple": "is not a pair; write [low, high], e.g. [30, 90]",
    "dict": "is not a mapping; write `key: value` lines indented below it",
    "model": "is not a mapping; write `key: value` lines indented below it",
    "model_attributes": "is not a mapping; write `key: value` lines indented below it",
}


def _type_family(kind: str) -> str | None:
    """The expected type of a wrong-type error (None for other errors, e.g. string_too_long)."""
    if not kind.endswith(("_type", "_parsing", "_from_float", "_fractional_part", "_parsing_size")):
        return None
    for family in ("datetime", "date", "time", "int", "float", "bool", "string", "list", "tuple", "dict"):
        if kind.startswith(family):
            return family
    if kind in ("model_type", "model_attributes_type", "dataclass_type"):
        return "model"
    return None


def _rule_kind_message(value: Any, path: Path_) -> tuple[Path_, bool, str]:
    """Why a mapping is not a rule, and where to point (path, at its key?)."""
    example = "e.g. `segment: lapsed_buyers`, or `feature: recency_days` with `gte: 90`"
    if not isinstance(value, dict):
        return path, False, f"`{_shown(value)}` is not a rule: a rule is a mapping, {example}"
    subjects = [k for k in value if k in RULE_KINDS]
    if len(subjects) > 1:
        return (
            (*path, subjects[1]),
            True,
            f"one rule has both `{subjects[0]}:` and `{subjects[1]}:`: a rule has one of them; put the two "
            f"rules as items of a list under `all:` (both must match) or `any:` (either)",
        )
    for key in value:
        close = nearest(str(key), RULE_KINDS)
        if close:
            return (*path, key), True, f"`{key}` is not a kind of rule; did you mean `{close}`?"
    found = ", ".join(f"`{k}`" for k in value) or "nothing"
    return (
        path,
        False,
        f"this rule has {found} but no subject key: write one of {', '.join(RULE_KINDS)}, {example}",
    )


STEP_SHAPE = "a step has a `name:` and exactly one of the keys " + ", ".join(STEP_KINDS)


def _step_kind_message(value: Any, path: Path_) -> tuple[Path_, bool, str]:
    """Why a list item is not a step, and where to point (the step's line, or a misspelled action key)."""
    if not isinstance(value, dict):
        example = "e.g. `- name: offer` with `send:`"
        return path, False, f"`{_shown(value)}` is not a step: {STEP_SHAPE}, {example}"
    named = f"step `{value['name']}`" if isinstance(value.get("name"), str) else "this step"
    actions = [k for k in value if k in STEP_KINDS]
    if len(actions) > 1:
        listed = " and ".join(f"`{k}:`" for k in actions)
        return path, False, f"{named} has {listed}: {STEP_SHAPE}; give `{actions[1]}:` a step of its own"
    for key in value:
        close = nearest(str(key), STEP_KINDS) if key not in ("name", "next") else None
        if close:
            text = f"`{key}` is not a kind of step; did you mean `{close}`? ({STEP_SHAPE})"
            return (*path, key), True, text
    return path, False, f"{named} does nothing: {STEP_SHAPE}"


def _expected_literals(ctx: dict[str, Any] | None) -> list[str]:
    return re.findall(r"'([^']*)'", str((ctx or {}).get("expected", "")))


def _message(
    root: type[BaseModel], data: Any, err: dict[str, Any], path: Path_, rest: list[Any]
) -> tuple[Path_, bool, str]:
    """(path to point at, point at the key?, sentence) for one pydantic error."""
    kind, value, ctx = err["type"], err.get("input"), err.get("ctx") or {}
    key = next((s for s in reversed(path) if isinstance(s, str)), None)
    label = f"`{key}: {_shown(value)}`" if key is not None else f"`{_shown(value)}`"
    if kind == "extra_forbidden":
        model = model_at(root, data, path[:-1])
        allowed = keys_of(model) if model else []
        where = _name(path[:-1])
        close = nearest(str(path[-1]), allowed)
        hint = f"did you mean `{close}`?" if close else f"write one of: {', '.join(allowed)}"
        return path, True, f"unknown key `{path[-1]}` in {where}; {hint}"
    if kind == "missing":
        missing = rest[-1] if rest else key
        model = model_at(root, data, path)
        described = ""
        if model is not None:
            info = next((f for n, f in model.model_fields.items() if (f.alias or n) == missing), None)
            described = f" ({info.description})" if info is not None and info.description else ""
        return path, bool(path), f"{_name(path)} needs `{missing}:`{described}; add it"
    if kind == "rule_kind":
        return _rule_kind_message(value, path)
    if kind == "step_kind":
        return _step_kind_message(value, path)
    if kind == "literal_error":
        options = _expected_literals(ctx)
        close = nearest(str(value), options)
        hint = f"did you mean `{close}`? " if close else ""
        return path, False, f"{label} is not allowed here; {hint}write one of: {', '.join(options)}"
    if kind == "string_pattern_mismatch":
        slug = re.sub(r"[^a-z0-9_-]+", "-", str(value).lower()).strip("-_") or "my-campaign"
        return (
            path,
            False,
            f"{label} is not a valid name: use lowercase letters, digits, - and _, e.g. `{slug}`",
        )
    if kind in ("value_error", "assertion_error"):
        text = str(ctx.get("error", err["msg"])).removeprefix("Value error, ")
        return path, False, text
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return path, False, f"{label}: {err['msg'].replace('Input should be', 'must be')}"
    if kind == "too_short":
        what = "rule" if key in ("all", "any") else "item"
        return path, False, f"`{key}:` needs at least one {what} in its list ({_name(path)} is empty)"
    if kind == "too_long":
        return path, False, f"{label}: {err['msg'].replace('should have', 'must have')}"
    family = _type_family(kind)
    if family is not None:
        return path, False, f"{label} {_TYPE_HINTS[family]}"
    text = re.sub(r"^(Input|String|List|Value) should", "must", err["msg"])
    return path, False, f"{label}: {text}"


_WANTED = {
    "float": "a number", "int": "a number", "date": "a date (YYYY-MM-DD)", "datetime": "a date",
    "string": "a text", "bool": "true or false", "tuple": "a pair [low, high]",
}  # fmt: skip


def problems_from_validation(
    exc: ValidationError, root: type[BaseModel], data: Any, marks: Marks, file: str
) -> list[Problem]:
    """One readable problem per location (pydantic may report one value once per member of a union)."""
    grouped: dict[tuple[Path_, Any], list[tuple[dict[str, Any], list[Any]]]] = {}
    for err in exc.errors(include_url=False):
        path, rest = _data_path(data, err["loc"])
        missing = rest[-1] if err["type"] == "missing" and rest else None
        grouped.setdefault((path, missing), []).append((err, rest))
    problems = []
    for (path, _), errs in grouped.items():
        err, rest = errs[0]
        families = {_type_family(e["type"]) for e, _ in errs}
        if len(errs) > 1 and families <= set(_WANTED):
            key = next((s for s in reversed(path) if isinstance(s, str)), "value")
            wanted = " or ".join(sorted({_WANTED[f] for f in families}))
            point, at_key, text = (
                path,
                False,
                f"`{key}: {_shown(err.get('input'))}` is not valid: write {wanted}",
            )
        else:
            point, at_key, text = _message(root, data, err, path, rest)
        line, col = position(marks, point, at_key)
        problems.append(Problem(file, line, col, text))
    return sorted(problems, key=lambda p: (p.line or 0, p.column or 0))


def validate_model(model: type[M], data: Any, marks: Marks, file: str) -> M:
    """``model`` from loaded data, or SpecError with file:line:column problems."""
    if not isinstance(data, dict):
        what = "empty" if data is None else f"a {type(data).__name__}, not a mapping"
        required = [f.alias or n for n, f in model.model_fields.items() if f.is_required()]
        first = (required or keys_of(model))[0]
        raise SpecError([Problem(file, 1, 1, f"the file is {what}: write `key: value` lines, starting with "
                                 f"`{first}:`")])  # fmt: skip
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise SpecError(problems_from_validation(exc, model, data, marks, file)) from None


def load_located(path: Path | str, model: type[M]) -> Located[M]:
    data, marks = load_yaml(path)
    file = display_path(path)
    return Located(validate_model(model, data, marks, file), file, marks)


def load_campaign(path: Path | str) -> Campaign:
    """The campaign of ``path`` (YAML and schema checked, references not): SpecError otherwise."""
    return load_located(path, Campaign).value


def load_segments(path: Path | str) -> Located[SegmentsFile]:
    """audiences/segments.yaml with positions (SegmentBook adds the reference checks)."""
    return load_located(path, SegmentsFile)


# --------------------------------------------------------------------------
# Checks across files: relance validate
# --------------------------------------------------------------------------


def walk_rules(rule: Any, path: Path_) -> Iterator[tuple[Any, Path_]]:
    """Every rule inside ``rule`` (itself included) with its path in the file."""
    if rule is None:
        return
    yield rule, path
    if isinstance(rule, AllRule | AnyRule):
        key = "all" if isinstance(rule, AllRule) else "any"
        for i, sub in enumerate(getattr(rule, key)):
            yield from walk_rules(sub, (*path, key, i))
    elif isinstance(rule, NotRule):
        yield from walk_rules(rule.not_, (*path, "not"))


def schema() -> dict[str, Any]:
    """The JSON Schema of a campaign file (campaigns/schema.json), for editors."""
    out = Campaign.model_json_schema(by_alias=True, mode="validation")
    out["$schema"] = "http://json-schema.org/draft-07/schema#"
    out["title"] = "relance campaign"
    out["description"] = "A campaign of relance (campaigns/*.yaml); see campaigns/README.md"
    return out


def schema_text() -> str:
    """campaigns/schema.json as written by `relance schema` (stable: a test compares it)."""
    import json

    return json.dumps(schema(), indent=2, ensure_ascii=False, sort_keys=False) + "\n"
