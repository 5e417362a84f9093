"""The console's languages: Chinese (zh-CN) is written in the templates, English comes from
a gettext catalog (Babel reads locale/en/LC_MESSAGES/console.po; a test keeps it in step
with the templates). The zh catalog holds only the control plane's own messages (in
English in the code) that a page shows. A person picks with ?lang=en or ?lang=zh (kept in a cookie);
otherwise the browser's Accept-Language decides, and Chinese is the default."""
from __future__ import annotations

import io
from functools import lru_cache
from pathlib import Path
from typing import Callable

from babel import Locale, UnknownLocaleError
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations

LOCALES = Path(__file__).parent / "locale"
LANGUAGES = ("zh", "en")
DEFAULT = "zh"


@lru_cache(maxsize=None)
def translations(lang: str) -> NullTranslations:
    po = LOCALES / lang / "LC_MESSAGES" / "console.po"
    if not po.exists():
        return NullTranslations()
    with po.open("rb") as f:
        catalog = read_po(f, locale=lang)
    buf = io.BytesIO()
    write_mo(buf, catalog)
    buf.seek(0)
    return Translations(buf)


def pick(query: str | None, cookie: str | None, accept: str | None) -> str:
    for choice in (query, cookie):
        if choice in LANGUAGES:
            return choice
    if accept:
        wanted = [part.split(";")[0].strip().replace("-", "_") for part in accept.split(",")]
        try:
            found = Locale.negotiate([w for w in wanted if w], ["zh_CN", "en"], sep="_")
        except (UnknownLocaleError, ValueError):
            found = None
        if found:
            return found.language
    return DEFAULT


def gettext(lang: str) -> Callable[[str], str]:
    return translations(lang).gettext
