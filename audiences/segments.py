"""Named, reusable audiences: audiences/segments.yaml, with line numbers and reference checks.

A segment is a rule with a name; a campaign (or another segment) uses it with
``segment: <name>``. The book is loaded once, checked as a whole (unknown
names, cycles such as ``a -> b -> a``) and then answers ``get(name)`` for the
rule compiler (audiences.rules), which expands the references it meets.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from audiences.rule_context import RuleError
from core.spec import Rule, SegmentRule, SegmentsFile, nearest
from core.spec_loader import Located, Problem, SpecError, display_path, load_segments, walk_rules


class SegmentError(RuleError):
    """An unknown segment, or one that cannot be expanded (cycle, unknown reference inside it)."""


class SegmentFileError(SegmentError, SpecError):
    """The segments file itself is broken (YAML or schema): every problem with its position."""

    def __init__(self, problems: list[Problem]) -> None:
        SpecError.__init__(self, problems)


@dataclass
class SegmentBook:
    """The segments of one file, checked; ``get`` refuses names that are unknown or cannot be expanded."""

    located: Located[SegmentsFile] | None
    file: str
    problems: list[Problem] = field(default_factory=list)  # cycles and unknown references, with positions
    _broken: dict[str, str] = field(default_factory=dict)  # name -> why it cannot be used
    file_broken: bool = False  # the file did not load: every reference is refused, with that reason

    # ---- loading ---------------------------------------------------------

    @classmethod
    def load(cls, path: Path | str | None = None, strict: bool = False) -> SegmentBook:
        """The book of ``path`` (default settings.segments_file); a missing file is an empty book.

        Syntax and schema errors raise SegmentFileError (a RuleError and a SpecError). Reference
        problems raise only with ``strict``; otherwise ``get`` refuses the segments they break.
        """
        if path is None:
            from core.settings import get_settings

            path = get_settings().segments_file
        path = Path(path)
        if not path.is_file():
            return cls(None, display_path(path))
        try:
            located = load_segments(path)
        except SpecError as exc:
            raise SegmentFileError(exc.problems) from None
        book = cls(located, display_path(path))
        book._check_references()
        if strict and book.problems:
            raise SegmentFileError(book.problems)
        return book

    @classmethod
    def broken(cls, path: Path | str, problems: list[Problem]) -> SegmentBook:
        """A stand-in for a file that did not load, so that validate reports its problems once."""
        return cls(None, display_path(path), list(problems), file_broken=True)

    @classmethod
    def from_rules(cls, rules: dict[str, Rule], file: str = "<segments>") -> SegmentBook:
        """A book built in code (tests, tools): same checks, positions unknown."""
        from core.spec import Segment

        located = Located(SegmentsFile(segments={n: Segment(rule=r) for n, r in rules.items()}), file, {})
        book = cls(located, file)
        book._check_references()
        return book

    # ---- the API the rule compiler uses --------------------------------------

    def names(self) -> list[str]:
        return list(self.located.value.segments) if self.located else []

    def __contains__(self, name: object) -> bool:
        return name in self.names()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def get(self, name: str) -> Rule:
        """The rule of segment ``name`` as written (it may use other segments); SegmentError if unusable."""
        problem = self.problem_with(name)
        if problem is not None:
            raise SegmentError(problem)
        return self.located.value.segments[name].rule  # type: ignore[union-attr]

    def description(self, name: str) -> str:
        return self.located.value.segments[name].description if name in self else ""

    def expand(self, rule: Rule) -> Rule:
        """``rule`` with every ``segment:`` reference replaced by the segment's (expanded) rule."""
        from core.spec import AllRule, AnyRule, NotRule

        if isinstance(rule, SegmentRule):
            return self.expand(self.get(rule.segment))
        if isinstance(rule, AllRule):
            return AllRule(all=[self.expand(r) for r in rule.all])
        if isinstance(rule, AnyRule):
            return AnyRule(any=[self.expand(r) for r in rule.any])
        if isinstance(rule, NotRule):
            return NotRule(not_=self.expand(rule.not_))
        return rule

    def problem_with(self, name: str) -> str | None:
        """Why ``segment: name`` cannot be used (with a "did you mean"), or None."""
        if self.file_broken:
            return f"{self.file} has errors (reported above): fix them first"
        if name not in self:
            close = nearest(name, self.names())
            hint = f"did you mean `{close}`?" if close else f"define it under `segments:` in {self.file}"
            return f"unknown segment `{name}`; {hint}"
        return self._broken.get(name)

    # ---- checks ----------------------------------------------------------

    def location(self, name: str) -> tuple[int | None, int | None]:
        return self.located.at(("segments", name), key=True) if self.located else (None, None)

    def _references(self, name: str) -> list[tuple[str, tuple[Any, ...]]]:
        """(segment used, its path in the file) for every ``segment:`` in segment ``name``."""
        rule = self.located.value.segments[name].rule  # type: ignore[union-attr]
        return [
            (sub.segment, (*at, "segment"))
            for sub, at in walk_rules(rule, ("segments", name, "rule"))
            if isinstance(sub, SegmentRule)
        ]

    def _check_references(self) -> None:
        """Unknown references and cycles, each reported once where it is written; what they break."""
        assert self.located is not None
        names = self.names()
        graph = {n: self._references(n) for n in names}
        for name in names:
            for used, at in graph[name]:
                if used not in graph:
                    close = nearest(used, names)
                    hint = f"did you mean `{close}`?" if close else "define it under `segments:`"
                    self.problems.append(self.located.problem(at, f"unknown segment `{used}`; {hint}"))
                    self._broken[name] = (
                        f"segment `{name}` uses the unknown segment `{used}` ({self._at(at)})"
                    )
        self._find_cycles(graph)
        self._spread_breakage(graph)

    def _at(self, at: tuple[Any, ...]) -> str:
        assert self.located is not None
        line, col = self.located.at(at)
        return f"{self.file}:{line}:{col}" if line else self.file

    def _find_cycles(self, graph: dict[str, list[tuple[str, tuple[Any, ...]]]]) -> None:
        """Depth-first search; each cycle is reported once, at the reference that closes it."""
        assert self.located is not None
        state: dict[str, int] = {}  # 1 = on the current path, 2 = done
        stack: list[str] = []
        reported: set[frozenset[str]] = set()

        def visit(name: str) -> None:
            state[name] = 1
            stack.append(name)
            for used, at in graph[name]:
                if used not in graph:
                    continue
                if state.get(used) == 1:
                    cycle = [*stack[stack.index(used) :], used]
                    text = " -> ".join(cycle)
                    for member in cycle:
                        self._broken.setdefault(
                            member, f"segment `{member}` is in the cycle {text} ({self._at(at)})"
                        )
                    if frozenset(cycle) not in reported:
                        reported.add(frozenset(cycle))
                        self.problems.append(
                            self.located.problem(
                                at,
                                f"segments refer to each other in a cycle: {text}; "
                                f"remove one of these `segment:` references",
                            )
                        )
                elif used not in state:
                    visit(used)
            stack.pop()
            state[name] = 2

        for name in graph:
            if name not in state:
                visit(name)

    def _spread_breakage(self, graph: dict[str, list[tuple[str, tuple[Any, ...]]]]) -> None:
        """A segment using a broken one is broken too (with the first reason)."""
        changed = True
        while changed:
            changed = False
            for name, refs in graph.items():
                if name in self._broken:
                    continue
                for used, _ in refs:
                    if used in self._broken:
                        self._broken[name] = f"segment `{name}` uses `{used}`: {self._broken[used]}"
                        changed = True
                        break

    def check_names(
        self, check: Callable[[Located[Any], Any, tuple[Any, ...]], list[Problem]]
    ) -> list[Problem]:
        """Run a rule check (field and feature names...) over every segment of the file."""
        if self.located is None:
            return []
        out: list[Problem] = []
        for name, segment in self.located.value.segments.items():
            out.extend(check(self.located, segment.rule, ("segments", name, "rule")))
        return out
