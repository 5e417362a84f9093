"""What the nodes were given: placements, drained nodes, the configuration release applied
to each."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Mapping, Sequence

from controlplane.core.state.store import Store, actor


@dataclass(frozen=True)
class AppliedNode:
    release_id: str
    digests: dict[str, str]
    applied_at: float


class NodeRecords(Store):
    def placements(self) -> dict[str, tuple[str, ...]]:
        out: dict[str, list[str]] = {}
        for tenant, node in self.db.execute(
                "SELECT tenant, node FROM placements ORDER BY tenant, position"):
            out.setdefault(tenant, []).append(node)
        return {t: tuple(n) for t, n in out.items()}

    def save_placements(self, placement: Mapping[str, Sequence[str]]) -> None:
        with self.tx() as db:
            db.execute("DELETE FROM placements")
            db.executemany(
                "INSERT INTO placements (tenant, position, node) VALUES (?, ?, ?)",
                [(t, i, n) for t, nodes in placement.items() for i, n in enumerate(nodes)])

    def drained(self) -> frozenset[str]:
        return frozenset(r[0] for r in self.db.execute("SELECT node FROM drained"))

    def set_drained(self, node: str, drained: bool) -> bool:
        """Mark or unmark; returns whether anything changed."""
        with self.tx() as db:
            if drained:
                cur = db.execute("INSERT OR IGNORE INTO drained VALUES (?, ?, ?)",
                                 (node, time.time(), actor()))
            else:
                cur = db.execute("DELETE FROM drained WHERE node = ?", (node,))
            changed = cur.rowcount > 0
            if changed:
                self._audit(db, "node.drain" if drained else "node.undrain", node, {})
        return changed

    def applied(self) -> dict[str, AppliedNode]:
        return {node: AppliedNode(rid, json.loads(dig), at) for node, rid, dig, at in
                self.db.execute("SELECT node, release_id, digests, applied_at FROM node_state")}

    def applied_ids(self) -> dict[str, str]:
        """node -> the release the last apply put there, without its digest list (25 ms a
        read at 5,000 units on 5 nodes, for a unit's page, status and each probe round)."""
        return dict(self.db.execute("SELECT node, release_id FROM node_state"))

    def record_applied(self, node: str, release_id: str, digests: Mapping[str, str],
                       run_id: int) -> None:
        with self.tx() as db:
            db.execute("INSERT OR REPLACE INTO node_state VALUES (?, ?, ?, ?, ?)",
                       (node, release_id, json.dumps(dict(digests), sort_keys=True),
                        time.time(), run_id))

    def forget_node(self, node: str) -> None:
        with self.tx() as db:
            db.execute("DELETE FROM node_state WHERE node = ?", (node,))
