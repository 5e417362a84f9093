"""What `govhost waf replay` reads and judges (pure): the old server's access log, and the
WAF's audit entries for the replayed requests.

An access log in the combined format (nginx and Apache write it) holds the request line, the
referer and the user agent; request bodies are not in it, so a form's POST fields cannot be
replayed, only its URL and query string. Both servers escape what is not printable as
`\\xHH`; the replay sends those bytes as they came, except line breaks and NUL, which no
server could have received in a request line (such a line is skipped and named).

The CRS blocks by anomaly score: each matching rule adds points by its severity, and rule
949110 refuses the request when the total reaches the threshold (5 by default). A request
the WAF would refuse therefore has 949110 among its matches, and each other matching rule
is a reason; `judge` groups them per rule and says which requests would pass if that rule
alone were excluded.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

# host ident user [time] "request" status bytes "referer" "user agent"
_COMBINED = re.compile(
    r'^(?P<client>\S+) \S+ \S+ \[(?P<time>[^\]]*)\] "(?P<request>(?:[^"\\]|\\.)*)" '
    r'(?P<status>\d{3}|-) (?P<bytes>\d+|-)'
    r'(?: "(?P<referer>(?:[^"\\]|\\.)*)" "(?P<agent>(?:[^"\\]|\\.)*)")?')
_METHOD = re.compile(r"^[A-Z]{1,20}$")
_ESCAPE = re.compile(rb"\\x([0-9A-Fa-f]{2})|\\(.)")
REFUSES = 949110                          # Inbound Anomaly Score Exceeded
# Rules that report, not judge: the scores and the correlation at the end of a request.
REPORTING = frozenset({949110, 959100, 980130, 980140})
# The CRS's default points per severity (crs-setup.conf: tx.critical_anomaly_score etc.)
POINTS = {"0": 5, "1": 5, "2": 5, "3": 4, "4": 3, "5": 2}
THRESHOLD = 5
MAX_LINE = 16384


@dataclass(frozen=True)
class Request:
    line: int                             # in the access log, from 1
    method: str
    target: bytes                         # path and query, as the server received them
    referer: bytes
    agent: bytes

    def shown(self) -> str:
        return f"{self.method} {self.target.decode('utf-8', 'backslashreplace')}"


@dataclass(frozen=True)
class Skipped:
    line: int
    why: str


def _unescape(text: str) -> bytes | None:
    """The bytes a server logged as `\\xHH` (and `\\"`, `\\\\`); None when they hold a line
    break or NUL."""
    raw = text.encode("utf-8", "surrogateescape")
    out = _ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]) if m.group(1) else m.group(2),
                      raw)
    return None if re.search(rb"[\r\n\x00]", out) else out


def parse(lines: Iterable[str]) -> Iterator[Request | Skipped]:
    """Each line of a combined (or common) log as a request to replay, or why not."""
    for n, line in enumerate(lines, 1):
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        if len(line) > MAX_LINE:
            yield Skipped(n, f"longer than {MAX_LINE} characters")
            continue
        m = _COMBINED.match(line)
        if m is None:
            yield Skipped(n, "not in the combined or common log format")
            continue
        parts = m["request"].split(" ")
        if len(parts) != 3 or not _METHOD.match(parts[0]) or not parts[2].startswith("HTTP/"):
            yield Skipped(n, f"no request line ({m['request'][:60]!r})")
            continue
        target = _unescape(parts[1])
        referer = _unescape(m["referer"] or "-")
        agent = _unescape(m["agent"] or "-")
        if target is None or referer is None or agent is None:
            yield Skipped(n, "a line break or NUL inside the request")
            continue
        if not target.startswith(b"/"):
            yield Skipped(n, "the target is not a path (a proxy request)")
            continue
        yield Request(n, parts[0], target, b"" if referer == b"-" else referer,
                      b"" if agent == b"-" else agent)


@dataclass(frozen=True)
class Match:
    rule: int
    points: int
    message: str


def matches(entry: Mapping) -> list[Match]:
    """The rules one ModSecurity JSON audit entry matched."""
    out = []
    for m in entry.get("transaction", {}).get("messages", []) or []:
        d = m.get("details", {}) or {}
        try:
            rule = int(d.get("ruleId", ""))
        except ValueError:
            continue
        out.append(Match(rule, POINTS.get(str(d.get("severity", "")), 0),
                         str(m.get("message", ""))[:200]))
    return out


@dataclass
class RuleRow:
    rule: int
    message: str
    refused: list[int] = field(default_factory=list)      # lines it helped refuse
    alone: list[int] = field(default_factory=list)        # lines that pass without it


@dataclass
class Verdict:
    replayed: int
    refused: dict[int, Request]                           # by line
    rules: list[RuleRow]

    def to_json(self, examples: int = 5) -> dict:
        return {"replayed": self.replayed, "refused": len(self.refused),
                "rules": [{"rule": r.rule, "message": r.message, "refused": len(r.refused),
                           "pass_if_excluded": len(r.alone),
                           "examples": [{"line": n, "request": self.refused[n].shown()}
                                        for n in r.refused[:examples]]}
                          for r in self.rules]}


def judge(requests: Sequence[Request], seen: Mapping[int, Sequence[Match]]) -> Verdict:
    """Per rule, the replayed requests it would have helped refuse (`seen`: the matches of
    each request's line), most first."""
    by_line = {r.line: r for r in requests}
    refused: dict[int, Request] = {}
    rows: dict[int, RuleRow] = {}
    for line, found in sorted(seen.items()):
        if line not in by_line or not any(m.rule == REFUSES for m in found):
            continue
        refused[line] = by_line[line]
        reasons = {m.rule: m for m in found if m.rule not in REPORTING and m.points}
        total = sum(m.points for m in reasons.values())
        for m in reasons.values():
            row = rows.setdefault(m.rule, RuleRow(m.rule, m.message))
            row.refused.append(line)
            if total - m.points < THRESHOLD:
                row.alone.append(line)
    ordered = sorted(rows.values(), key=lambda r: (-len(r.refused), r.rule))
    return Verdict(len(requests), refused, ordered)
