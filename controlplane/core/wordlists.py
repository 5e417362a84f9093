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
import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictStr

Severity = Literal["block", "review", "note"]
SEVERITIES: tuple[str, ...] = ("block", "review", "note")
# What a person must act on: a serious wording error (严重表述错误) while on a live site.
SERIOUS: tuple[str, ...] = ("block", "review")

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _word(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError(f"{value!r} contains a control character or a line break")
    if not value.strip():
        raise ValueError("must not be empty")
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
    except_in: tuple[Word, ...] = ()   # longer forms that contain the word and are right


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
