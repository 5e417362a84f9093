"""A unit's request for a site, from the console's form to a tenant manifest (pure).

A unit without a site fills in a form in Chinese (title, kind, contact, names, columns,
identity marks); this turns the form into the manifest an operator would have written by
hand. Nothing the unit types reaches the YAML as YAML: the manifest is built as data and
dumped by PyYAML's safe dumper, then validated exactly as `govhost validate` validates a
file in inventory/tenants/ (the shell does that against the county's inventory). A new
unit starts `launch: pending` (47号: no site goes online before its security check).
"""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from typing import Any, Mapping

import yaml

from controlplane.core.errors import Problem

FIELDS = ("name", "title", "kind", "contact_name", "contact_email", "contact_phone",
          "aliases", "columns", "site_code", "icp", "psb", "review")
REVIEW_CHOICES = {"unit": ["unit"], "unit_county": ["unit", "county"], "none": []}
MAX_FIELD = 4000
MULTILINE = frozenset({"aliases", "columns"})      # one item per line
# Line and paragraph separators that YAML, JavaScript or a log reader may take as a new line:
# typed into a one-line field, they are how a value grows keys of its own.
_BREAKS = frozenset("\x85\u2028\u2029")
# Control, format (zero-width, bidi overrides), line and paragraph separators, and lone
# surrogates (no UTF-8 for them). Unassigned code points (Cn) are not refused: a rare
# character of a person's or a place's name (CJK Extension H/I, Unicode 15) is unassigned
# to this Python's Unicode 14 tables; private-use ones (Co) are how older GB18030 systems
# spell some rare characters. Neither is a line break to YAML, a browser or a log reader.
_REFUSED = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})


def _noncharacter(ch: str) -> bool:
    """U+FDD0..U+FDEF and the last two code points of every plane: never text."""
    o = ord(ch)
    return 0xFDD0 <= o <= 0xFDEF or (o & 0xFFFE) == 0xFFFE
# A manifest field (as the loader names it) -> the form field that holds it.
_FORM_FIELD = {"name": "name", "title": "title", "kind": "kind", "contact.name": "contact_name",
               "contact.email": "contact_email", "contact.phone": "contact_phone",
               "aliases": "aliases", "columns": "columns", "identity": "site_code",
               "identity.site_code": "site_code", "identity.icp": "icp",
               "identity.psb": "psb", "review": "review"}


@dataclass(frozen=True)
class SiteRequest:
    """What the unit typed, field by field, as text."""

    values: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_form(cls, form: Mapping[str, Any]) -> "SiteRequest":
        return cls({k: str(form.get(k, ""))[:MAX_FIELD].replace("\r\n", "\n").strip()
                    for k in FIELDS})

    def get(self, key: str) -> str:
        return self.values.get(key, "")


def check_text(name: str, value: str, multiline: bool = False) -> str | None:
    """Why `value`, typed into form field `name`, is refused (None: it is not). One rule for
    every field of every console form: no control or format characters (zero-width, bidi
    overrides), no line or paragraph separators; a line break only where the field takes one
    item per line (a browser's CRLF counts as one)."""
    why = _refusal(value, multiline)
    return f"{name}: {why}" if why else None


def _refusal(value: str, multiline: bool) -> str | None:
    """check_text's reason, without the field's name."""
    if multiline:
        value = value.replace("\r\n", "\n")
    for ch in value:
        if ch == "\n" and multiline:
            continue
        cat = unicodedata.category(ch)
        if ch in _BREAKS or cat in _REFUSED or _noncharacter(ch):
            what = "a line break" if ch in "\n\r" or ch in _BREAKS or cat in ("Zl", "Zp") \
                else "an invisible or control character"
            return (f"{what} (U+{ord(ch):04X}) is not allowed here; type the text "
                    "again without it" + ("" if multiline else ", on one line"))
    return None


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def manifest(req: SiteRequest) -> tuple[dict[str, Any], list[Problem]]:
    """The tenant manifest the request asks for, and what in the form cannot be read (each
    problem names the form field). Field values are checked by the manifest's own rules
    afterwards; here only the form's layout (one alias per line, columns as
    `path title category`) is read."""
    problems: list[Problem] = []
    for key in FIELDS:
        why = _refusal(req.get(key), key in MULTILINE)
        if why:
            problems.append(Problem("form", key, why))
    doc: dict[str, Any] = {
        "name": req.get("name").lower(),
        "title": req.get("title"),
        "kind": req.get("kind"),
        "contact": {"name": req.get("contact_name"), "email": req.get("contact_email"),
                    "phone": req.get("contact_phone")},
        "launch": "pending",
    }
    aliases = _lines(req.get("aliases"))
    if aliases:
        doc["aliases"] = aliases
    columns = []
    for n, line in enumerate(_lines(req.get("columns")), 1):
        parts = line.split()
        if len(parts) < 3:
            problems.append(Problem("form", "columns", f"line {n}: {line!r}: write the path, "
                                    "the title and the category, e.g. "
                                    "`/xwdt/ 新闻动态 news`"))
            continue
        columns.append({"path": parts[0], "title": " ".join(parts[1:-1]),
                        "category": parts[-1]})
    if columns:
        doc["columns"] = columns
    identity = {k: req.get(k) for k in ("site_code", "icp", "psb")}
    if any(identity.values()):
        doc["identity"] = identity
    review = req.get("review") or "unit"
    if review not in REVIEW_CHOICES:
        problems.append(Problem("form", "review", f"{review!r}: choose one of "
                                f"{', '.join(REVIEW_CHOICES)}"))
    elif REVIEW_CHOICES[review]:
        doc["review"] = {"levels": REVIEW_CHOICES[review]}
    return doc, problems


def to_yaml(doc: Mapping[str, Any]) -> str:
    """The manifest file as it lands in inventory/tenants/: safe-dumped, with a fixed header
    line. No form text goes into a comment (the request's record in the state store and the
    audit log say who asked)."""
    head = "# Requested through the console's site request form; approved by an operator.\n"
    return head + yaml.safe_dump(dict(doc), allow_unicode=True, sort_keys=False,
                                 default_flow_style=False, width=100)


def form_field(problem: Problem) -> str:
    """The form field a loader problem is about ('' when it is about the whole request)."""
    f = problem.field
    if problem.file == "form" and f in FIELDS:        # the form's own check, by form field
        return f
    for key in (f, f.split("[")[0], f.split(".")[0].split("[")[0]):
        if key in _FORM_FIELD:
            return _FORM_FIELD[key]
    return ""
