"""Moving content releases between nodes so that content follows its replicas.

Carries out the moves of `replicas.plan_moves` (what each node holds comes from
`remote.node_status(..., content=True)`): each release streamed from a node that has it to the one that lacks
it, through the control machine, only the files the target does not already have in a
release it holds, verified there against the release's digest list; then the live one is
switched to. The target does not serve the unit yet: its config release (which makes it a
replica) goes out only after every move of the run succeeded.
"""
from __future__ import annotations

import contextlib
import json
import shlex
import subprocess
import tarfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, Mapping, Sequence

from controlplane.core import paths, remote
from controlplane.core.errors import GovhostError
from controlplane.core.manifest import Hosts, Node
from controlplane.sites.replicas import Holding, Move
from govhost_node import digests as digest_list

TOOL = paths.NODE_TENANTS_TOOL
BASE_GONE = 4
# Units a batch carries at most: a failure costs at most this many units a second try,
# and a node's batches of more units go side by side.
BATCH = 100


class SyncError(GovhostError):
    """A content release could not be copied to a node; its old placement stays."""


@dataclass(frozen=True)
class Link:
    """How to run a node tool (default: govhost-tenants) on the nodes of one cluster."""
    hosts: Hosts
    known_hosts: Path
    nodes: Mapping[str, Node]

    def argv(self, node: str, *args: str, tool: str = TOOL) -> list[str]:
        cmd = " ".join([tool, *(shlex.quote(a) for a in args)])
        return remote.ssh_argv(self.hosts, self.nodes[node], self.known_hosts, cmd)

    def run(self, node: str, *args: str, data: bytes | BinaryIO | None = None,
            timeout: float = 600, tool: str = TOOL) -> str:
        """`data`: the tool's stdin, bytes or an open file (streamed, not read into memory)."""
        feed = remote.feed(data) if data is None or isinstance(data, bytes) else \
            {"stdin": data}
        r = subprocess.run(self.argv(node, *args, tool=tool), capture_output=True,
                           timeout=timeout, **feed)
        if r.returncode != 0:
            raise SyncError(f"{args[0]} on {node}: "
                            f"{r.stderr.decode(errors='replace').strip() or r.returncode}")
        return r.stdout.decode()

    def run_each(self, nodes: Sequence[str], *args: str, data: bytes | None = None,
                 timeout: float = 600, tool: str = TOOL) -> dict[str, str | Exception]:
        """`run` on every node of `nodes` at once: node -> its output, or the exception that
        says why it could not be run there (a node down is an answer, not an abort)."""
        def one(node: str) -> tuple[str, str | Exception]:
            try:
                return node, self.run(node, *args, data=data, timeout=timeout, tool=tool)
            except (SyncError, subprocess.TimeoutExpired, OSError) as exc:
                return node, exc

        with ThreadPoolExecutor(max_workers=max(1, len(nodes))) as pool:
            return dict(pool.map(one, nodes))

    def digests(self, node: str, tenant: str,
                rid: str = "current") -> tuple[str | None, dict[str, str]]:
        """A release's id and digest list (path -> sha256) on `node`; `current`: the live one
        (None and {} when nothing is live there)."""
        text = self.run(node, "digests", tenant, rid)
        if not text.strip():
            return None, {}
        first, _, rest = text.partition("\n")
        return first, digest_list.parse(rest)

    def files(self, node: str, tenant: str, rid: str,
              names: Sequence[str]) -> Iterator[tuple[str, bytes]]:
        """The named files of a release on `node`, streamed (read by the wording check and
        the search index; nothing is written on the control machine)."""
        if not names:
            return
        proc = subprocess.Popen(self.argv(node, "pack", tenant, rid), stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdin and proc.stdout and proc.stderr
        feeder = threading.Thread(target=_feed, args=(proc.stdin, names), daemon=True)
        feeder.start()
        try:
            with tarfile.open(fileobj=proc.stdout, mode="r|gz") as tar:
                for member in tar:
                    f = tar.extractfile(member) if member.isreg() else None
                    if f is not None and not member.name.startswith("."):
                        yield member.name, f.read()
        except tarfile.TarError as exc:
            proc.kill()
            raise SyncError(f"reading {tenant}/{rid} from {node}: "
                            f"{proc.stderr.read().decode(errors='replace').strip() or exc}")
        finally:
            feeder.join(timeout=60)
            proc.stdout.close()
            err = proc.stderr.read().decode(errors="replace").strip()
            if proc.wait(timeout=60) != 0 and err:
                raise SyncError(f"reading {tenant}/{rid} from {node}: {err}")


def _feed(pipe, names: Sequence[str]) -> None:
    try:
        pipe.write("".join(n + "\n" for n in names).encode())
    except BrokenPipeError:
        pass
    finally:
        pipe.close()


def _digests(link: Link, node: str, tenant: str, rid: str) -> dict[str, str]:
    return link.digests(node, tenant, rid)[1]


def transfer(link: Link, tenant: str, src: str, dst: str, rid: str,
             base: str | None) -> int:
    """Copy release `rid` of `tenant` from `src` to `dst`: with `base` (a release `dst`
    holds) only the files that differ travel and the rest are hard-linked there. Returns
    the bytes streamed."""
    files = _digests(link, src, tenant, rid)
    have = _digests(link, dst, tenant, base) if base else {}
    for attempt in ("delta", "whole") if base else ("whole",):
        need = [p for p, d in files.items() if attempt == "whole" or have.get(p) != d]
        pack = subprocess.Popen(link.argv(src, "pack", tenant, rid), stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        args = [tenant, rid] + ([base] if base and attempt == "delta" else [])
        recv = subprocess.Popen(link.argv(dst, "receive", *args), stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        pack.stdin.write("".join(f"{p}\n" for p in need).encode())
        pack.stdin.close()
        moved = 0
        while chunk := pack.stdout.read(1 << 16):     # counted as it passes through
            moved += len(chunk)
            recv.stdin.write(chunk)
        _, rerr = recv.communicate(timeout=3600)     # closes its stdin: end of the stream
        pack.wait(timeout=60)
        perr = pack.stderr.read()
        pack.stdout.close()
        pack.stderr.close()
        if pack.returncode != 0:
            raise SyncError(f"reading release {rid} of {tenant} on {src}: "
                            f"{perr.decode(errors='replace').strip()}")
        if recv.returncode == 0:
            return moved
        if recv.returncode != BASE_GONE or attempt == "whole":
            raise SyncError(f"copying release {rid} of {tenant} to {dst}: "
                            f"{rerr.decode(errors='replace').strip()}")
    raise SyncError("unreachable")


@dataclass
class MoveResult:
    move: Move
    ok: bool
    bytes: int = 0
    error: str = ""


def carry_out(link: Link, moves: Sequence[Move], holdings_now: Mapping[str, Mapping[str, Holding]],
              say: Callable[[str, str, str], None] = lambda *_: None,
              workers: int = 4) -> list[MoveResult]:
    """Do the moves (a few at a time; each unit's releases in order, each the delta base of
    the next), then switch the target to the live release."""

    def arrived(m: Move) -> None:
        say(m.target, "content", f"{m.tenant} {m.live} from {m.source}")

    def one(m: Move) -> MoveResult:
        held = holdings_now.get(m.target, {}).get(m.tenant, Holding())
        base = max((r for r in held.releases if r <= m.releases[0]), default=None) \
            if held.releases else None
        total = 0
        try:
            for rid in m.releases:
                if rid in held.releases and rid != m.live:
                    base = rid
                    continue
                total += transfer(link, m.tenant, m.source, m.target, rid,
                                  base if base != rid or held.intact else None)
                base = rid
            link.run(m.target, "switch", m.tenant, m.live)
        except (SyncError, subprocess.TimeoutExpired, OSError) as exc:
            say(m.target, "content", f"{m.tenant} failed")
            return MoveResult(m, False, total, str(exc))
        arrived(m)
        return MoveResult(m, True, total)

    if not moves:
        return []
    # Units the target holds nothing of (a replaced or added node, a new replica) travel
    # together, a batch per source and target; the rest a unit at a time, each release
    # the delta of the one before. A unit its batch could not bring is tried alone.
    batches: dict[tuple[str, str], list[Move]] = {}
    single: list[Move] = []
    for m in moves:
        if holdings_now.get(m.target, {}).get(m.tenant, Holding()).releases:
            single.append(m)
        else:
            batches.setdefault((m.source, m.target), []).append(m)
    chunks = [ms[i:i + BATCH] for ms in batches.values() for i in range(0, len(ms), BATCH)]

    def batch(ms: list[Move]) -> list[MoveResult]:
        out = transfer_many(link, ms)
        for r in out:
            if r.ok:
                arrived(r.move)
        return out

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        done = [r for rs in pool.map(batch, chunks) for r in rs]
        # what a batch could not bring is tried alone, with the units that always go so
        again = [r.move for r in done if not r.ok]
        done = [r for r in done if r.ok] + list(pool.map(one, single + again))
    by_move = {r.move: r for r in done}
    return [by_move[m] for m in moves]


def transfer_many(link: Link, moves: Sequence[Move]) -> list[MoveResult]:
    """Every release of `moves` (one source, one target that holds none of these units)
    in one stream: `pack-many` on the source, `receive-many` on the target, which checks
    each release and switches each unit to its live one. Each unit's result; the batch's
    bytes are shared by what each unit's files weigh."""
    src, dst = moves[0].source, moves[0].target
    by_tenant = {m.tenant: m for m in moves}
    head = {"units": {m.tenant: {"releases": list(m.releases), "live": m.live} for m in moves}}
    procs: list[subprocess.Popen] = []
    try:
        pack = subprocess.Popen(link.argv(src, "pack-many"), stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        procs.append(pack)
        recv = subprocess.Popen(link.argv(dst, "receive-many"), stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        procs.append(recv)
        assert pack.stdin and pack.stdout and pack.stderr and recv.stdin
        feeder = threading.Thread(target=_feed, args=(pack.stdin, [
            f"{m.tenant} {rid}" for m in moves for rid in m.releases]), daemon=True)
        feeder.start()
        moved = 0
        try:
            recv.stdin.write((json.dumps(head) + "\n").encode())
            while chunk := pack.stdout.read(1 << 16):
                moved += len(chunk)
                recv.stdin.write(chunk)
        except BrokenPipeError:
            pass                                  # the receiver ended: its lines say why
        out, rerr = recv.communicate(timeout=3600)
        pack.stdout.close()
        feeder.join(timeout=60)
        perr = pack.stderr.read().decode(errors="replace").strip()
        pack.stderr.close()
        if pack.wait(timeout=60) != 0:
            # What the source sent may be cut anywhere: nothing of this batch is trusted
            # (each unit is tried alone next, the way that checks its reader's exit).
            why = f"reading on {src}: {perr or f'exit {pack.returncode}'}"
            return [MoveResult(m, False, 0, why) for m in moves]
    except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
        for p in procs:
            with contextlib.suppress(OSError):
                p.kill()
        return [MoveResult(m, False, 0, f"copying to {dst}: {exc}") for m in moves]
    results: dict[str, dict] = {}
    for line in out.decode(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            r = json.loads(line)
            if isinstance(r, dict) and r.get("tenant") in by_tenant:
                results[r["tenant"]] = r
    raw = sum(int(r.get("raw_bytes") or 0) for r in results.values()) or 1
    why = f"receiving on {dst}: {rerr.decode(errors='replace').strip() or 'no result'}"
    return [MoveResult(m, True, moved * int(results[m.tenant].get("raw_bytes") or 0) // raw)
            if results.get(m.tenant, {}).get("ok") else
            MoveResult(m, False, 0, results.get(m.tenant, {}).get("error") or why)
            for m in moves]
