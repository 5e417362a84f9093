"""`govhost` commands: Content releases: publish, rollback, review."""
from __future__ import annotations

import time
from typing import Optional

import typer

from commands.output import call, county, emit, human_size, note, out, table

app = typer.Typer()
review_app = typer.Typer(help="Content releases waiting for review (units with `review:` "
                         "levels in their manifest).", no_args_is_help=True)
app.add_typer(review_app, name="review")


@app.command()
def publish(unit: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """Publish UNIT's upload area as a new content release on all its replicas."""
    from controlplane.content import releases as content
    res = call(content.publish, county(), unit, note, as_json=as_json)
    if as_json:
        emit(res)
        return
    out.print(f"{unit}: release {res['release']} {res['status']} on {', '.join(res['nodes'])}"
              f" — {res['files']} files, {human_size(res['bytes'])}; added {len(res['added'])}, "
              f"changed {len(res['changed'])}, removed {len(res['removed'])}", highlight=False)
    if res["skipped"]:
        out.print(f"[yellow]not published[/] (symlinks, special or hidden files): "
                  f"{', '.join(res['skipped'][:10])}", highlight=False)


@app.command()
def rollback(unit: str, release: Optional[str] = typer.Argument(None),
             as_json: bool = typer.Option(False, "--json")) -> None:
    """Make an earlier content release live again (default: the one before the live one)."""
    from controlplane.content import releases as content
    res = call(content.rollback, county(), unit, release, note, as_json=as_json)
    if as_json:
        emit(res)
    else:
        out.print(f"{unit}: {res['live']} live again (was {res['was']})", highlight=False)


@app.command()
def releases(unit: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """UNIT's content releases: size, files, who published, which is live."""
    from controlplane.content import releases as content
    rows = call(content.releases, county(), unit, as_json=as_json)
    if as_json:
        emit(rows)
        return
    t = table(f"{unit}: content releases",
              "release", "status", "files", "size", "published by", "at")
    for r in rows:
        t.add_row(r["id"], f"[green]{r['status']}[/]" if r["live"] else r["status"],
                  str(r["files"]), human_size(r["bytes"]), r["published_by"],
                  time.strftime("%Y-%m-%d %H:%M", time.localtime(r["published_at"])))
    out.print(t)


@review_app.command("list")
def review_list(as_json: bool = typer.Option(False, "--json")) -> None:
    """Releases waiting for a decision."""
    from controlplane.content import releases as content
    rows = content.pending(county())
    if as_json:
        emit(rows)
        return
    t = table("Waiting for review",
              "unit", "release", "waits for", "files", "size", "published by", "added",
              "changed", "removed")
    for r in rows:
        c, chain = r["changes"], r["review"]
        level = chain["next_level"] or 0
        t.add_row(r["tenant"], r["release_id"],
                  f"{level + 1}/{len(chain['levels'])} {chain['levels'][level]}",
                  str(r["files"]), human_size(r["bytes"]), r["actor"],
                  str(len(c["added"])), str(len(c["changed"])), str(len(c["removed"])))
    out.print(t)


@review_app.command("show")
def review_show(unit: str, release: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """What a pending release changes: files added, changed, removed, with sizes."""
    from controlplane.content import releases as content
    r = call(content.review_show, county(), unit, release, as_json=as_json)
    if as_json:
        emit(r)
        return
    out.print(f"{unit} {release} ({r['status']}), published by {r['actor']}", highlight=False)
    chain = r.get("review")
    if chain:
        done = {s["level"]: s for s in chain["steps"]}
        for i, kind in enumerate(chain["levels"]):
            s = done.get(i)
            if s is None:
                mark = "waiting" if i == chain["next_level"] else "-"
            else:
                mark = f"{s['decision']} by {s['by']}"
                if s["comment"]:
                    mark += f": {s['comment']}"
            out.print(f"  review level {i + 1} ({kind}): {mark}", highlight=False)
    for kind, colour in (("added", "green"), ("changed", "yellow")):
        for path, size in r["changes"][kind]:
            out.print(f"  [{colour}]{kind:<8}[/] {path} ({human_size(size)})", highlight=False)
    for path in r["changes"]["removed"]:
        out.print(f"  [red]removed [/] {path}", highlight=False)
    show_wording(r["wording"])


def show_wording(found: list[dict]) -> None:
    """Wording findings with the word highlighted in its context (what a reviewer reads
    before approving)."""
    from rich.markup import escape
    if not found:
        return
    colour = {"block": "bold red", "review": "bold yellow", "note": "cyan"}
    out.print(f"wording findings ({len(found)}):", highlight=False)
    for f in found:
        c = colour.get(f["severity"], "bold")
        right = f" → {escape(f['right'])}" if f.get("right") else ""
        note = f" ({escape(f['note'])})" if f.get("note") else ""
        place = f" ({f['place']})" if f.get("place", "body") != "body" else ""
        out.print(f"  [{c}]{f['severity']:<6}[/] {escape(f['file'])} {f['where']} {f['line']}"
                  f"{place}: "
                  f"…{escape(f['before'])}[{c} reverse]{escape(f['found'])}[/]"
                  f"{escape(f['after'])}… [{c}]{escape(f['word'])}{right}[/]{note}",
                  highlight=False, soft_wrap=True)


@review_app.command("preview")
def review_preview(unit: str, release: str,
                   as_json: bool = typer.Option(False, "--json")) -> None:
    """A signed link that shows a release through any node before it goes live (it ends
    after cluster.yaml `console.preview_minutes`)."""
    from controlplane.content import releases as content
    link = call(content.preview_link, county(), unit, release)
    if as_json:
        emit(link)
        return
    out.print(link["url"], highlight=False, soft_wrap=True)


@review_app.command("approve")
def review_approve(unit: str, release: str,
                   comment: str = typer.Option("", "--comment", help="Kept with the decision "
                                               "and shown to the unit.")) -> None:
    """Approve the waiting level of a pending release; the last level makes it live."""
    _decide(unit, release, True, comment)


@review_app.command("reject")
def review_reject(unit: str, release: str,
                  comment: str = typer.Option("", "--comment", help="Why: kept with the "
                                              "decision and shown to the unit.")) -> None:
    """Discard a pending release; the live site stays as it is."""
    _decide(unit, release, False, comment)


def _decide(unit: str, release: str, approve: bool, comment: str) -> None:
    from controlplane.content import releases as content
    res = call(lambda: content.decide(county(), unit, release, approve, note,
                                      comment=comment))
    out.print(f"{unit} {release}: {res['status']}", highlight=False)
