"""The county's own words, so the segmenter keeps 青水县, 茶河镇 and 青水县教育局 whole.

jieba's dictionary knows common words, not this county's places and institutions; a place
name it does not know is cut into characters and found only as a phrase. The words come from
the manifests (the county's and every unit's and section's title), and the place names in
them (a run of characters ending in 省 市 县 区 镇 乡 村 街道 社区) are added on their own.
"""
from __future__ import annotations

import re

from controlplane.core.inventory import Inventory

_PLACE = re.compile(r"[\u4e00-\u9fff]{1,6}?(?:街道|社区|省|市|县|区|镇|乡|村)")
_SUFFIXES = ("人民政府", "委员会", "管理局", "局", "委", "办公室", "办")


def words(inv: Inventory) -> list[str]:
    titles = [inv.cluster.name, inv.cluster.portal.title]
    for t in inv.tenants:
        titles.append(t.title)
        titles.extend(s.title for s in t.sections)
    out: set[str] = set()
    for title in titles:
        title = title.strip()
        if not re.fullmatch(r"[\u4e00-\u9fff]{2,30}", title):
            continue
        out.add(title)
        m = _PLACE.match(title)
        if m and len(m.group()) >= 2:
            out.add(m.group())
            rest = title[m.end():]
            for suffix in _SUFFIXES:     # 青水县教育局 -> 教育局 as well
                if rest.endswith(suffix) and len(rest) > len(suffix):
                    out.add(rest)
                    break
    return sorted(out)
