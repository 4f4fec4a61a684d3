"""A message folder compiled once: content.yaml read with its line numbers, every field compiled.

A message is a folder under templates/ (see templates/README.md): ``content.yaml`` holds the
shared content per locale and the short channel texts; ``email.html.j2`` and ``email.txt.j2``
are optional and extend the shared layout in ``templates/_layout/``. ``MessageLoader`` turns
it into a ``Message``: each Jinja string compiled with where it was written (for errors) and
what it reads (for the Renderer's caches), or a RenderError naming the file and line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from jinja2 import Environment, Template, TemplateNotFound, TemplateSyntaxError, meta, nodes

from channels.render_errors import ErrorLocator, RenderError
from channels.template_env import language_of

CHANNELS = ("email", "sms", "push")
CONTENT_FILE = "content.yaml"
LAYOUT_HTML = "_layout/email.html.j2"
LAYOUT_TEXT = "_layout/email.txt.j2"
TOP_KEYS = {"channels", "link", "deep_link", "description", "marketing"}
# A content.yaml field that reads only these names renders the same for every recipient of one
# (message, locale, offer, variant, campaign): it is rendered once and reused (see Renderer._value).
OFFER_ONLY_NAMES = frozenset(
    {
        "offer",
        "variant",
        "campaign",
        "locale",
        "sender",
        "money",
        "cents",
        "number",
        "percent",
        "format_date",
        "range",
    }
)
# A field that reads only these renders the same for customers with the same first name (the
# greeting of a subject or headline): cached per first name too, names repeat across a base.
NAME_NAMES = OFFER_ONLY_NAMES | {"first_name", "greeting"}


@dataclass
class Field:
    """One Jinja string of content.yaml, compiled, with where it was written."""

    template: Template | None  # None: a plain string with no Jinja syntax (rendered for free)
    file: str
    line: int
    static: str = ""
    offer_only: bool = False  # reads only OFFER_ONLY_NAMES: same text for every recipient of an offer
    per_name: bool = False  # reads only those and the first name: same text for customers named alike
    link_slot: bool = False  # per_name but for `link`, which it only prints ({{ link }}): see Renderer._sms


@dataclass
class LocaleTexts:
    shared: dict[str, Field] = field(default_factory=dict)
    email: dict[str, Field] = field(default_factory=dict)
    sms: Field | None = None
    push: dict[str, Field] = field(default_factory=dict)
    shared_per_name: bool = False  # every shared field is plain or per_name (set once loaded)


@dataclass
class Message:
    name: str
    folder: Path
    channels: list[str]
    marketing: bool
    link: Field | None
    deep_link: Field | None
    locales: dict[str, LocaleTexts]
    shown: str = ""  # content.yaml as shown in errors
    html: Template | None = None
    text: Template | None = None
    html_file: str = ""
    text_file: str = ""

    def texts_for(self, locale: str | None, default_locale: str) -> tuple[str, LocaleTexts]:
        """The language section for a customer locale: its language, else the default's, else the first."""
        for lang in (language_of(locale, default_locale), language_of(default_locale)):
            if lang in self.locales:
                return lang, self.locales[lang]
        lang = next(iter(self.locales))
        return lang, self.locales[lang]


class MessageLoader:
    """Compiles each message folder on first use and keeps it for the life of the Renderer."""

    def __init__(self, templates_dir: Path, env: Environment, errors: ErrorLocator) -> None:
        self.templates_dir = templates_dir
        self.env = env
        self.errors = errors
        self._messages: dict[str, Message] = {}

    def exists(self, message: str) -> bool:
        return (self.templates_dir / message / CONTENT_FILE).is_file()

    def compile(self, message: str) -> Message:
        compiled = self._messages.get(message)
        if compiled is None:
            compiled = self._messages[message] = self._load(message)
        return compiled

    def _load(self, message: str) -> Message:
        folder = self.templates_dir / message
        content_path = folder / CONTENT_FILE
        shown = self.errors.display(content_path)
        if not content_path.is_file():
            raise RenderError(
                f"no message `{message}`: create {shown} (see templates/README.md)",
                self.errors.display(folder),
            )
        try:
            data = yaml.load(content_path.read_text(encoding="utf-8"), Loader=_Located)  # noqa: S506
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            raise RenderError(f"YAML error: {exc}", shown, mark.line + 1 if mark else None) from exc
        if not isinstance(data, dict):
            raise RenderError("content.yaml must be a mapping of locales (fr:, en:) and settings", shown, 1)
        channels = [str(c) for c in data.get("channels", CHANNELS)]
        unknown = [c for c in channels if c not in CHANNELS]
        if unknown:
            raise RenderError(f"unknown channel(s) {unknown}: write email, sms and/or push", shown)
        locales = {}
        for key, section in data.items():
            if key in TOP_KEYS:
                continue
            if not isinstance(section, dict):
                raise RenderError(f"`{key}:` should be a locale section (fr:, en:) holding texts", shown)
            locales[str(key)] = self._load_locale(section, shown)
        if not locales:
            raise RenderError("no locale section: add `fr:` (and `en:`) with the texts", shown, 1)
        link = self._field(data["link"], shown) if "link" in data else None
        deep = self._field(data["deep_link"], shown) if "deep_link" in data else None
        compiled = Message(
            message, folder, channels, bool(data.get("marketing", True)), link, deep, locales, shown
        )
        if "email" in channels:
            compiled.html = self._file_template(message, "email.html.j2", LAYOUT_HTML)
            compiled.text = self._file_template(message, "email.txt.j2", LAYOUT_TEXT)
            compiled.html_file = self._file_of(compiled.html)
            compiled.text_file = self._file_of(compiled.text)
        _check_channel_texts(compiled, shown)
        return compiled

    def _load_locale(self, section: dict, shown: str) -> LocaleTexts:
        texts = LocaleTexts()
        for key, value in section.items():
            if key == "email":
                texts.email = {k: self._field(v, shown) for k, v in (value or {}).items()}
            elif key == "push":
                texts.push = {k: self._field(v, shown) for k, v in (value or {}).items()}
            elif key == "sms":
                texts.sms = self._field(value, shown)
            else:
                texts.shared[str(key)] = self._field(value, shown)
        texts.shared_per_name = all(f.template is None or f.per_name for f in texts.shared.values())
        return texts

    def _field(self, value: Any, shown: str) -> Field:
        line = getattr(value, "line", 0)
        source = str(value) if value is not None else ""
        if "{" not in source:
            return Field(None, shown, line, source)
        name = self.errors.name_field(shown, line)
        try:
            code = self.env.compile(source, filename=name)
        except TemplateSyntaxError as exc:
            raise RenderError(
                f"template syntax error: {exc.message}", shown, line + (exc.lineno or 1) - 1
            ) from exc
        tree = self.env.parse(source)
        names = meta.find_undeclared_variables(tree)
        return Field(
            self.env.template_class.from_code(self.env, code, self.env.make_globals(None)),
            shown,
            line,
            offer_only=names <= OFFER_ONLY_NAMES,
            per_name=names <= NAME_NAMES,
            link_slot=names <= NAME_NAMES | {"link"} and _printed_only(tree, "link"),
        )

    def _file_template(self, message: str, filename: str, fallback: str) -> Template:
        own = f"{message}/{filename}"
        name = own if (self.templates_dir / own).is_file() else fallback
        try:
            return self.env.get_template(name)
        except TemplateSyntaxError as exc:
            raise self.errors.error(exc, self.errors.display(self.templates_dir / name)) from exc
        except TemplateNotFound as exc:
            raise RenderError(
                f"template {exc.name} not found", self.errors.display(self.templates_dir / name)
            ) from exc

    def _file_of(self, template: Template) -> str:
        return self.errors.display(template.filename or template.name or "?")


def _check_channel_texts(compiled: Message, shown: str) -> None:
    for lang, texts in compiled.locales.items():
        if "email" in compiled.channels and "subject" not in texts.email:
            raise RenderError(f"`{lang}: email: subject:` is missing", shown)
        if "sms" in compiled.channels and texts.sms is None:
            raise RenderError(f"`{lang}: sms:` is missing (the SMS text)", shown)
        if "push" in compiled.channels and not {"title", "body"} <= set(texts.push):
            raise RenderError(f"`{lang}: push:` needs `title:` and `body:`", shown)


def _printed_only(tree: nodes.Template, name: str) -> bool:
    """Whether every use of the variable ``name`` is printed as is (``{{ name }}``) at the top level
    of the template: never tested, filtered, sliced, passed or assigned, nor inside a block whose
    output something else captures or transforms ({% filter %}, {% set %}...), so its value cannot
    change anything else in the text."""
    printed = {
        id(child)
        for output in tree.body
        if isinstance(output, nodes.Output)
        for child in output.nodes
        if isinstance(child, nodes.Name) and child.name == name
    }
    return all(id(node) in printed for node in tree.find_all(nodes.Name) if node.name == name)


# --------------------------------------------------------------------------
# YAML with line numbers
# --------------------------------------------------------------------------


class _Located(yaml.SafeLoader):
    """A YAML loader that keeps each string's line, for error messages."""


class _Src(str):
    """A string from content.yaml that knows its first line."""

    line: int

    def __new__(cls, value: str, line: int) -> _Src:
        obj = super().__new__(cls, value)
        obj.line = line
        return obj


def _scalar_with_line(loader: _Located, node: yaml.ScalarNode) -> _Src:
    block = node.style in ("|", ">")  # a block scalar's text starts on the next line
    return _Src(loader.construct_scalar(node), node.start_mark.line + 1 + (1 if block else 0))


_Located.add_constructor("tag:yaml.org,2002:str", _scalar_with_line)
