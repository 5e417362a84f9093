"""The county's word lists (`inventory/wording/*.yaml`): forbidden words and wrong forms.

A list is part of the desired state like a manifest: loaded and validated with the inventory,
refused with the file and field when wrong, so a broken list never reaches a publish. What is
checked against them, and how, is the `wording` capability's business.

    description: 机构改革后已不用的名称
    severity: block            # the default of every entry below
    traditional: true          # also match traditional forms of these words
    entries:
      - word: 国家工商行政管理总局
        right: 国家市场监督管理总局
        note: 2018 年机构改革后更名
      - word: 茶河乡
        right: 茶河镇
        severity: review
        except_in: [茶河乡村振兴]
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import tempfile
import unicodedata
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictStr,
    field_validator,
)

from govhost_node import words

Severity = Literal["block", "review", "note"]
SEVERITIES: tuple[str, ...] = ("block", "review", "note")
# What a person must act on: a serious wording error (严重表述错误) while on a live site.
SERIOUS: tuple[str, ...] = ("block", "review")

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _word(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError(f"{value!r} contains a control character or a line break")
    if not value.strip():
        raise ValueError("must not be empty")
    if value != value.strip():
        raise ValueError(f"{value!r} starts or ends with a space")
    if any(unicodedata.category(ch) in ("Cf", "Zl", "Zp") for ch in value):
        raise ValueError(f"{value!r} holds an invisible format character")
    if not unicodedata.is_normalized("NFC", value):
        raise ValueError(f"{value!r} is not in Unicode's composed form (NFC)")
    if len(re.sub(r"[\W_]", "", value)) == 0:
        raise ValueError(f"{value!r} has no letters or digits: it would match everywhere")
    return value


Word = Annotated[StrictStr, Field(min_length=1, max_length=60), AfterValidator(_word)]
Note = Annotated[StrictStr, Field(max_length=300), AfterValidator(_word)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WordEntry(_Model):
    word: Word
    right: Word | None = None          # the right form, shown with every finding
    severity: Severity | None = None   # default: the list's severity
    note: Note | None = None
    # longer forms that contain the word and are right
    except_in: tuple[Word, ...] = Field(default=(), max_length=20)

    @field_validator("word")
    @classmethod
    def _found_as_itself(cls, value: str) -> str:
        k = words.runs(words.fold(value))[0]
        if k.isascii() and len(k) <= 2:
            raise ValueError(f"{value!r} is matched as {k!r} (case, spaces and punctuation "
                             "are ignored): too short, it would be found inside other words")
        return value


class WordList(_Model):
    description: Note | None = None
    severity: Severity = "review"
    traditional: StrictBool = False    # also match the traditional forms of every word
    entries: tuple[WordEntry, ...] = Field(min_length=1, max_length=50_000)


def digest(lists: dict[str, WordList]) -> str:
    """A fingerprint of the lists' content: a file checked under one fingerprint need not be
    checked again until the lists change."""
    body = json.dumps({k: v.model_dump() for k, v in sorted(lists.items())},
                      ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()[:16]


@lru_cache(maxsize=1)
def _t2s():  # type: ignore[no-untyped-def]
    import opencc
    return opencc.OpenCC("t2s")


def simplified(text: str) -> str:
    """`text` in simplified characters (OpenCC t2s), the same length (a phrase that would
    change length is converted character by character), so offsets still match."""
    conv = _t2s().convert(text)
    if len(conv) == len(text):
        return conv
    return "".join(c if len(c := _t2s().convert(ch)) == 1 else ch for ch in text)


def key(word: str, traditional: bool) -> str:
    """A listed word as it is matched: folded, separators dropped, then simplified if its
    list also catches traditional forms (after the separators: `計 畫` is the phrase 計畫)."""
    norm = words.runs(words.fold(word))[0]
    return simplified(norm) if traditional else norm


# The CJK characters OpenCC turns into one other character (the unified block, extension A
# and the planes above): the node maps a message's traditional characters with this table.
_CJK = (range(0x3400, 0x4DC0), range(0x4E00, 0xA000), range(0x20000, 0x323B0))


# What the cached tables are made of: a change in how they are built is a new file.
TABLES_FORMAT = 2


@lru_cache(maxsize=1)
def _tables() -> tuple[dict[str, str], dict[str, str]]:
    """OpenCC's characters and phrases, kept between runs per OpenCC version: reading them
    costs about 0.4 s, paid otherwise by every `govhost` that renders the county."""
    import opencc

    from controlplane.core.templates import cache_dir
    d = cache_dir("opencc")
    path = d / f"t2s-{TABLES_FORMAT}-{getattr(opencc, '__version__', 'unknown')}.json" \
        if d else None
    if path is not None:
        try:
            chars, phrases = json.loads(path.read_text(encoding="utf-8"))
            if len(chars) > 1000 and len(phrases) > 100 and all(
                    len(k) == len(v) for table in (chars, phrases) for k, v in table.items()):
                return dict(chars), dict(phrases)
        except (OSError, ValueError, TypeError):
            pass
    chars = _t2s_chars()
    tables = (chars, _t2s_phrases())
    if path is not None:
        try:
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(tables, ensure_ascii=False), encoding="utf-8")
            os.replace(tmp, path)
        except OSError:
            pass
    return tables


def _t2s_chars() -> dict[str, str]:
    out = {}
    for block in _CJK:
        for cp in block:
            ch = chr(cp)
            s = _t2s().convert(ch)
            if s != ch and len(s) == 1:
                out[ch] = s
    return out


def _t2s_phrases() -> dict[str, str]:
    """OpenCC's traditional phrases (計畫 is 计划, not 计画), as OpenCC converts each: read
    from its own dictionary (TSPhrases, about 480 entries) with the `opencc_dict` tool its
    package carries."""
    import opencc
    clib = Path(opencc.__file__).parent / "clib"
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([str(clib / "bin" / "opencc_dict"), "-i",
                        str(clib / "share" / "opencc" / "TSPhrases.ocd2"), "-o",
                        f"{tmp}/phrases.txt", "-f", "ocd2", "-t", "text"], check=True,
                       capture_output=True, timeout=60,
                       env={**os.environ, "LD_LIBRARY_PATH": str(clib / "lib64")})
        lines = Path(f"{tmp}/phrases.txt").read_text(encoding="utf-8").splitlines()
    out = {}
    for line in lines:
        phrase = line.split("\t", 1)[0]
        conv = _t2s().convert(phrase)
        # every phrase, those converted as their characters too: OpenCC cuts a text into
        # its longest phrases first (慰藉 stays 慰藉 in 慰藉着, where 藉着 would become 借着).
        # One whose conversion changes the length is left out (none does today): the
        # conversion must keep offsets.
        if len(phrase) > 1 and len(conv) == len(phrase):
            out[phrase] = conv
    return out


_FOR_MESSAGES: dict[str, dict[str, Any]] = {}


def for_messages(lists: Mapping[str, WordList]) -> dict[str, Any]:
    """What a node needs to screen citizens' messages (govhost_node/words.py): the `block`
    and `review` words (a `note` neither refuses nor holds a message) and their `except_in`
    forms as keys already normalised, and (where a list also catches traditional forms)
    OpenCC's conversion tables. Empty when no list has such a word."""
    d = digest(dict(lists))
    if d in _FOR_MESSAGES:
        return _FOR_MESSAGES[d]
    rules: list[list[str]] = []
    keys: dict[bool, dict[str, list[list[int]]]] = {False: {}, True: {}}
    for _, wl in sorted(lists.items()):
        for e in wl.entries:
            severity = e.severity or wl.severity
            if severity not in SERIOUS:
                continue
            idx = len(rules)
            rules.append([e.word, severity, e.note or ""])
            for kind, form in ((words.WORD, e.word),
                               *((words.EXCEPT, ok) for ok in e.except_in)):
                k = key(form, wl.traditional)
                if k:
                    keys[wl.traditional].setdefault(k, []).append([kind, idx])
    out: dict[str, Any] = {}
    if rules:
        out = {"rules": rules, "plain": keys[False], "traditional": keys[True]}
        if keys[True]:
            # the whole of OpenCC's tables (about 4,700 characters and 300 phrases): the
            # node converts a text as `simplified` does, so both find the same words
            chars, phrases = _tables()
            out["t2s"] = dict(sorted(chars.items()))
            out["t2s_phrases"] = dict(sorted(phrases.items()))
    _FOR_MESSAGES.clear()
    _FOR_MESSAGES[d] = out
    return out
