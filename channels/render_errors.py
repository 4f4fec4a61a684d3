"""Template errors told in the marketer's words: which file, which line, what to write instead.

Jinja reports errors against its own names (a content.yaml field compiled as a string, a layout
whose CSS was inlined before compiling); ``ErrorLocator`` maps them back to the file and line
the marketer wrote, and explains the usual mistakes (an undefined variable, a sandbox refusal).
"""

from __future__ import annotations

import re
import traceback
from dataclasses import dataclass
from pathlib import Path

from jinja2 import Environment, TemplateSyntaxError, UndefinedError
from jinja2.sandbox import SecurityError

# What a template may read, listed in the error for an undefined variable.
CONTEXT_NAMES = (
    "customer, features, offer, variant, campaign, recommendations, content, link, greeting, "
    "first_name, locale, sender, money(), cents(), number(), percent(), format_date()"
)


@dataclass(frozen=True)
class Problem:
    """One thing `relance validate` reports: where (file, line) and what to do."""

    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.message}"


class RenderError(Exception):
    """A template failed for one message; ``file`` and ``line`` point at the marketer's source."""

    def __init__(self, message: str, file: str, line: int | None = None) -> None:
        self.message, self.file, self.line = message, file, line
        where = f"{file}:{line}" if line else file
        super().__init__(f"{where}: {message}")

    def problem(self) -> Problem:
        return Problem(self.file, self.line, self.message)


class ErrorLocator:
    """Turns any template failure into a RenderError naming the marketer's file and line."""

    def __init__(self, templates_dir: Path, env: Environment) -> None:
        self.templates_dir = templates_dir
        self.env = env
        self._field_files: dict[str, tuple[str, int]] = {}  # jinja filename -> (file, first line)

    def display(self, path: Path | str) -> str:
        """A path as the marketer sees it: relative to the folder holding templates/."""
        path = Path(path)
        try:
            return str(path.resolve().relative_to(self.templates_dir.resolve().parent))
        except ValueError:
            return str(path)

    def name_field(self, shown: str, line: int) -> str:
        """A unique Jinja filename for a content.yaml string starting at ``line`` of ``shown``."""
        name = f"{shown}#{line}#{len(self._field_files)}"
        self._field_files[name] = (shown, line)
        return name

    def error(self, exc: Exception, default_file: str, default_line: int | None = None) -> RenderError:
        """A RenderError naming the marketer's file and line for any template failure."""
        file, line = default_file, default_line
        if isinstance(exc, TemplateSyntaxError) and exc.filename:
            file, line = self._locate(exc.filename, exc.lineno) or (file, line)
        else:
            for frame in reversed(traceback.extract_tb(exc.__traceback__)):
                found = self._locate(frame.filename, frame.lineno)
                if found:
                    file, line = found
                    break
        return RenderError(self._explain(exc, file, line), file, line)

    def _locate(self, filename: str, lineno: int | None) -> tuple[str, int | None] | None:
        if filename in self._field_files:
            shown, first = self._field_files[filename]
            return shown, first + (lineno or 1) - 1
        line_maps = self.env.loader.line_maps  # type: ignore[union-attr]
        if filename in line_maps or filename.endswith(".j2"):
            mapped = line_maps.get(filename, {}).get(lineno or 0, lineno)
            return self.display(filename), mapped
        return None

    def _explain(self, exc: Exception, file: str, line: int | None) -> str:
        text = getattr(exc, "message", None) or str(exc)
        source_line = _source_line(self.templates_dir.parent / file, line)
        if isinstance(exc, UndefinedError):
            m = re.match(r"'(.+?)' is undefined", text)
            a = re.match(r"'(.+?)' has no attribute '(.+?)'", text)
            if m:
                text = f"`{m.group(1)}` is not defined"
            elif a:
                owner = re.search(rf"([A-Za-z_][\w.]*)\.{re.escape(a.group(2))}\b", source_line)
                name = f"{owner.group(1)}.{a.group(2)}" if owner else a.group(2)
                text = f"`{name}` is not defined (no field `{a.group(2)}` in {a.group(1)})"
            text = f"undefined variable: {text}. You can use: {CONTEXT_NAMES}"
        elif isinstance(exc, SecurityError):
            text = f"not allowed in a template: {text}"
        elif isinstance(exc, TemplateSyntaxError):
            text = f"template syntax error: {text}"
        else:
            text = f"{type(exc).__name__}: {text}"
        return f"{text}{f'  [in: {source_line}]' if source_line else ''}"


def _source_line(path: Path, line: int | None) -> str:
    if not line:
        return ""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return ""
    return lines[line - 1].strip()[:120] if 0 < line <= len(lines) else ""
