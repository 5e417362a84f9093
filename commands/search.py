"""`govhost` commands: the county search (站内搜索)."""
from __future__ import annotations

import typer

from commands.output import call, county, emit, fail, note, out, table
from controlplane.core import errors

app = typer.Typer()
search_app = typer.Typer(help="The county search: every unit's published pages, answered on "
                         "every node at /search.", no_args_is_help=True)
app.add_typer(search_app, name="search")


@search_app.command("sync")
def search_sync(units: list[str] = typer.Argument(None, help="Units (all when none)."),
                as_json: bool = typer.Option(False, "--json")) -> None:
    """Bring the index up to date with what is live, on every node (publish, rollback and
    removal do this for their unit; run it after a node was down or replaced)."""
    from controlplane.search import index
    res = call(lambda: index.sync(county(), units or None, say=note), as_json=as_json)
    if as_json:
        emit(res)
        return
    t = table(f"Search index: {res['units']} unit(s) changed, {res['pages_read']} page(s) read",
              "node", "units", "sent whole", "removed")
    for name, r in sorted(res["nodes"].items()):
        t.add_row(name, str(r.get("units", "")), ", ".join(r.get("sent_whole", [])),
                  ", ".join(r.get("removed", [])))
    out.print(t)


@search_app.command("query")
def search_query(words: str = typer.Argument(..., help="What to look for."),
                 unit: str = typer.Option(None, "--unit", help="Only this unit's pages."),
                 sort: str = typer.Option("relevance", "--sort", help="relevance or date"),
                 as_json: bool = typer.Option(False, "--json")) -> None:
    """Search the control machine's copy of the index (what every node answers)."""
    from controlplane.search import index
    if sort not in ("relevance", "date"):
        fail(errors.GovhostError(f"--sort {sort!r}: use relevance or date"), as_json)

    def run():
        c = county()
        idx = index.master(c)
        try:
            from govhost_node import search as node_search
            node_search.load_words(idx.words())
            return idx.search(words, unit, sort)
        finally:
            idx.close()
    res = call(run, as_json=as_json)
    if as_json:
        emit(res)
        return
    t = table(f"“{words}”: {res['total']} result(s)", "unit", "date", "title", "url")
    for r in res["results"]:
        t.add_row(r["unit"], r["date"] or "", r["title"], r["url"])
    out.print(t)
