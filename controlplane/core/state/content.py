"""Content releases and their way to the public: review chains and steps, proposed
rollbacks, and the wording checks' findings (per file content under one version of the
lists, so a file is read once per list change, and per release)."""
from __future__ import annotations

import json
import time
from typing import Any, Iterable, Mapping, Sequence

from controlplane.core.state.store import Store, actor


class ContentRecords(Store):
    def add_content_release(self, tenant: str, release_id: str, status: str,
                            summary: Mapping[str, Any], nodes: Sequence[str]) -> None:
        changes = {k: summary.get(k, []) for k in ("added", "changed", "removed", "skipped")}
        with self.tx() as db:
            db.execute("INSERT OR REPLACE INTO content_releases (tenant, release_id, status, "
                       "published_at, actor, files, bytes, nodes, changes) VALUES "
                       "(?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (tenant, release_id, status, summary.get("published_at", time.time()),
                        summary.get("published_by", actor()), summary.get("files", 0),
                        summary.get("bytes", 0), json.dumps(list(nodes)),
                        json.dumps(changes, ensure_ascii=False)))
            self._audit(db, f"content.{status}", f"{tenant}/{release_id}",
                        {"files": summary.get("files"), "bytes": summary.get("bytes"),
                         "nodes": list(nodes)}, summary.get("published_by"))

    def set_content_status(self, tenant: str, release_id: str, status: str,
                           action: str | None = None, who: str | None = None) -> None:
        with self.tx() as db:
            db.execute("UPDATE content_releases SET status = ?, decided_by = ?, decided_at = ? "
                       "WHERE tenant = ? AND release_id = ?",
                       (status, who or actor(), time.time(), tenant, release_id))
            self._audit(db, f"content.{action or status}", f"{tenant}/{release_id}", {}, who)

    def add_review_chain(self, tenant: str, release_id: str, levels: Sequence[str],
                         publisher: str) -> None:
        """The levels a pending release must pass, as the manifest said when it was
        published (a later change of the manifest does not move a release under way)."""
        with self.tx() as db:
            db.execute("INSERT OR REPLACE INTO review_chains (tenant, release_id, levels, "
                       "publisher) VALUES (?, ?, ?, ?)",
                       (tenant, release_id, json.dumps(list(levels)), publisher))

    def review_chain(self, tenant: str, release_id: str) -> dict[str, Any] | None:
        """{levels, publisher, steps} of a release that went through review, or None."""
        row = self.db.execute("SELECT levels, publisher FROM review_chains WHERE tenant = ? "
                              "AND release_id = ?", (tenant, release_id)).fetchone()
        if row is None:
            return None
        keys = ("level", "kind", "decision", "by", "at", "comment")
        steps = [dict(zip(keys, r)) for r in self.db.execute(
            f"SELECT {', '.join(keys)} FROM review_steps WHERE tenant = ? AND release_id = ? "
            "ORDER BY level", (tenant, release_id))]
        return {"levels": json.loads(row[0]), "publisher": row[1], "steps": steps}

    def add_review_step(self, tenant: str, release_id: str, level: int, kind: str,
                        decision: str, by: str, at: float, comment: str) -> None:
        """One level's decision, with its audit entry in the reviewer's name. A level is
        decided once: a second decision of the same level (two reviewers at once) fails."""
        with self.tx() as db:
            db.execute("INSERT INTO review_steps (tenant, release_id, level, kind, decision, "
                       "by, at, comment) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (tenant, release_id, level, kind, decision, by, at, comment))
            self._audit(db, f"content.review.{decision}", f"{tenant}/{release_id}",
                        {"level": level + 1, "kind": kind, "comment": comment}, by)

    def content_releases(self, tenant: str | None = None,
                         status: str | None = None) -> list[dict[str, Any]]:
        sql = ("SELECT tenant, release_id, status, published_at, actor, files, bytes, nodes, "
               "changes, decided_by, decided_at FROM content_releases")
        where, args = [], []
        if tenant:
            where.append("tenant = ?")
            args.append(tenant)
        if status:
            where.append("status = ?")
            args.append(status)
        if where:
            sql += " WHERE " + " AND ".join(where)
        keys = ("tenant", "release_id", "status", "published_at", "actor", "files", "bytes",
                "nodes", "changes", "decided_by", "decided_at")
        rows = [dict(zip(keys, r)) for r in self.db.execute(sql + " ORDER BY release_id", args)]
        for r in rows:
            r["nodes"], r["changes"] = json.loads(r["nodes"]), json.loads(r["changes"])
        return rows

    def live_releases(self, tenant: str | None = None) -> dict[str, str]:
        """Each unit's live release id (of `tenant` only): what the drift checks and a
        unit's page compare the nodes with. Only the ids are read: the rows' file lists,
        decoded for every live release to build this map, cost 1.8 s at 5,000 units of 200
        files (each unit page and probe round)."""
        if tenant is None:
            rows = self.db.execute("SELECT tenant, release_id FROM content_releases "
                                   "WHERE status = 'live' ORDER BY release_id")
        else:       # through the unit's own index entries (+: not the index of all statuses)
            rows = self.db.execute("SELECT tenant, release_id FROM content_releases "
                                   "WHERE tenant = ? AND +status = 'live' ORDER BY release_id",
                                   (tenant,))
        return dict(rows)

    def last_published(self, tenants: Iterable[str]) -> dict[str, float]:
        """Of `tenants`, when content that went live was last published (freshness), for
        those that ever published. At every scrape and overview: each unit's newest release
        is found through its index (every unit's releases, one a unit a day or so kept for
        ever, took 0.24 s to read at 5,000 units after a year)."""
        return {t: at for t, at in self.db.execute(
            "SELECT j.value, (SELECT c.published_at FROM content_releases AS c "
            "WHERE c.tenant = j.value AND c.status NOT IN ('pending', 'rejected') "
            "ORDER BY c.published_at DESC LIMIT 1) FROM json_each(?) AS j",
            (json.dumps(list(tenants)),)) if at is not None}

    def add_rollback(self, tenant: str, target: str, by: str, levels: Sequence[str]) -> int:
        """A proposed rollback, waiting for its review chain (kept under the key
        `rollback:<id>` beside the releases' chains)."""
        with self.tx() as db:
            cur = db.execute("INSERT INTO rollbacks (tenant, target, proposed_by, at, status) "
                             "VALUES (?, ?, ?, ?, 'pending')", (tenant, target, by, time.time()))
            pid = int(cur.lastrowid or 0)
            db.execute("INSERT INTO review_chains (tenant, release_id, levels, publisher) "
                       "VALUES (?, ?, ?, ?)",
                       (tenant, f"rollback:{pid}", json.dumps(list(levels)), by))
            self._audit(db, "content.rollback.proposed", f"{tenant}/{target}",
                        {"proposal": pid, "levels": list(levels)}, by)
        return pid

    def rollbacks(self, tenant: str, status: str | None = None) -> list[dict[str, Any]]:
        keys = ("id", "tenant", "target", "proposed_by", "at", "status")
        sql = f"SELECT {', '.join(keys)} FROM rollbacks WHERE tenant = ?"
        args: list[Any] = [tenant]
        if status:
            sql += " AND status = ?"
            args.append(status)
        return [dict(zip(keys, r)) for r in self.db.execute(sql + " ORDER BY id", args)]

    def set_rollback_status(self, pid: int, status: str) -> None:
        with self.tx() as db:
            db.execute("UPDATE rollbacks SET status = ? WHERE id = ?", (status, pid))

    def wording_cached(self, lists: str, digests: Sequence[str]) -> dict[str, list]:
        out: dict[str, list] = {}
        wanted = list(dict.fromkeys(digests))
        for i in range(0, len(wanted), 500):
            chunk = wanted[i:i + 500]
            marks = ",".join("?" * len(chunk))
            for d, f in self.db.execute(f"SELECT digest, findings FROM wording_files WHERE "
                                        f"lists = ? AND digest IN ({marks})", [lists, *chunk]):
                out[d] = json.loads(f)
        return out

    def wording_cache(self, lists: str, found: Mapping[str, list]) -> None:
        with self.tx() as db:
            db.executemany("INSERT OR REPLACE INTO wording_files VALUES (?, ?, ?)",
                           [(d, lists, json.dumps(f, ensure_ascii=False))
                            for d, f in found.items()])
            # two ranges of the lists index (`!=` reads every row): none once the lists
            # have not changed, the old lists' rows once after they did
            db.execute("DELETE FROM wording_files WHERE lists < ? OR lists > ?",
                       (lists, lists))

    def record_wording(self, tenant: str, release_id: str, lists: str, files: int,
                       findings: Sequence[Mapping[str, Any]]) -> None:
        with self.tx() as db:
            db.execute("INSERT OR REPLACE INTO wording_releases VALUES (?, ?, ?, ?, ?, ?)",
                       (tenant, release_id, lists, time.time(), files,
                        json.dumps(list(findings), ensure_ascii=False)))

    def wording(self, tenant: str | None = None,
                release_id: str | None = None) -> dict[tuple[str, str], dict[str, Any]]:
        sql, args = ("SELECT tenant, release_id, lists, checked_at, files, findings "
                     "FROM wording_releases"), []
        if tenant:
            sql += " WHERE tenant = ?" + (" AND release_id = ?" if release_id else "")
            args = [tenant] + ([release_id] if release_id else [])
        return {(t, r): {"tenant": t, "release": r, "lists": ls, "checked_at": at,
                         "files": n, "findings": json.loads(f)}
                for t, r, ls, at, n, f in self.db.execute(sql, args)}
