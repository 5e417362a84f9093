"""Work kept between runs, by the digest of everything it was computed from.

Every `govhost` run is a new process that reads every manifest and renders every unit's
files again; at 5,000 units that was two seconds of each plan, almost all of it the same
YAML parsed and the same templates rendered as the run before. A memo keeps each result
under a key that digests every input of the computation *and* govhost's own code (the
sources of the package and its templates, and the versions of the libraries that do the
work), so a kept result is used only where computing it again would give the same bytes:
an edited manifest, a changed template, an upgrade or another county secret is a new key.

The memo lives in the county's state directory (`memo/memo.db`, SQLite, mode 0600): what
is in it is trusted as much as the county secret beside it, and it is never code (JSON and
bytes, not pickles). It is only ever a shortcut: a memo that cannot be opened, read or
written (another account, a full disk, a damaged file) is a memo that remembers nothing,
a value that does not read back whole is computed again, and the run computes as before. Writes are buffered and go in at `flush`, in one
transaction, so two runs at once each see either all or none of the other's results; what
a run did not use is dropped when it is most of the file.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import os
import sqlite3
import stat
import sys
import threading
from pathlib import Path
from typing import Iterable

from controlplane.core import paths

# Bumped when what a key means changes in a way the code's digest would not show.
VERSION = b"1"
_LIBRARIES = ("PyYAML", "Jinja2", "MarkupSafe", "pydantic", "pydantic-core")


def _code_digest() -> bytes:
    """Govhost's own code as the memo sees it: every source file of the control plane, of
    the node programs (whose layout the rendered files name) and every template; Python's
    version, whether PyYAML parses with libyaml, and the libraries' versions. Read once, as
    this module is imported (a few ms): a process keeps the code it started with, so it
    must not file results under the code an upgrade put beside it later."""
    h = hashlib.blake2b(VERSION, digest_size=16)
    repo = Path(__file__).resolve().parent.parent.parent
    for root in (repo / "controlplane", repo / "govhost_node", Path(paths.TEMPLATES)):
        for p in sorted(root.rglob("*")):
            if p.is_file() and p.suffix in (".py", ".j2", ".conf", ".html", ".txt", ".json"):
                h.update(str(p.relative_to(root)).encode() + b"\0")
                h.update(p.read_bytes() + b"\0")
    import yaml
    h.update(f"python={sys.version}\0libyaml={getattr(yaml, '__with_libyaml__', False)}\0"
             .encode())
    for lib in _LIBRARIES:
        try:
            h.update(f"{lib}={importlib.metadata.version(lib)}\0".encode())
        except importlib.metadata.PackageNotFoundError:
            h.update(f"{lib}=?\0".encode())
    return h.digest()


_CODE = _code_digest()


def code_digest() -> bytes:
    return _CODE


def key(kind: str, *parts: bytes | str) -> tuple[str, bytes]:
    """The key of a result of `kind` computed from `parts` by today's code."""
    h = hashlib.blake2b(code_digest() + kind.encode() + b"\0", digest_size=20)
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "big"))
        h.update(data)
    return kind, h.digest()


Key = tuple[str, bytes]


class Memo:
    """Results by key: looked up one at a time, written all at once by `flush`."""

    # A kind's results that this process did not use are dropped once they are more than
    # PRUNE_SHARE of that kind's (units removed, manifests edited many times over).
    PRUNE_SHARE = 0.5

    def __init__(self, path: Path | None):
        self.path = path
        self.new: dict[Key, bytes] = {}
        self.used: dict[str, set[bytes]] = {}
        self.read: dict[str, dict[bytes, bytes]] = {}
        self.hits = self.misses = 0
        # one connection, used by whichever thread renders (the console's, the exporter's)
        self.lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._opened = path is None

    @classmethod
    def of_state(cls, state_dir: Path) -> "Memo":
        """The memo of the county whose state directory this is (opened on first use: a
        county's first run makes the directory)."""
        return cls(Path(state_dir) / "memo" / "memo.db")

    @property
    def db(self) -> sqlite3.Connection | None:
        """The file, opened on first use; None where it cannot be had, or where the state
        directory is not this account's own (the console's account reads a county it may
        not write)."""
        if not self._opened:
            assert self.path is not None
            try:
                own = self.path.parent.parent.stat().st_uid == os.geteuid()
            except FileNotFoundError:
                return None                      # not yet: the run makes it
            except OSError:
                own = False
            self._opened = True
            self._db = self._open(self.path) if own else None
        return self._db

    @staticmethod
    def _open(path: Path) -> sqlite3.Connection | None:
        try:
            path.parent.mkdir(mode=0o700, exist_ok=True)
            if not stat.S_ISDIR(path.parent.lstat().st_mode):      # a link put there
                return None
            os.chmod(path.parent, 0o700)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            try:
                os.fchmod(fd, 0o600)
            finally:
                os.close(fd)
            db = sqlite3.connect(path, timeout=5, isolation_level=None,
                                 check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE IF NOT EXISTS memo (kind TEXT NOT NULL, key BLOB NOT NULL, "
                       "value BLOB NOT NULL, PRIMARY KEY (kind, key)) WITHOUT ROWID")
            return db
        except (OSError, sqlite3.Error):
            return None

    def get(self, k: Key) -> bytes | None:
        with self.lock:
            kind, digest = k
            self.used.setdefault(kind, set()).add(digest)
            found = self.new.get(k)
            if found is None:
                found = self._kept(kind).get(digest)
            if found is None:
                self.misses += 1
            else:
                self.hits += 1
            return found

    def _kept(self, kind: str) -> dict[bytes, bytes]:
        """A kind's results, read in one pass on first use: a run asks for nearly all of
        them, and one read is a tenth of the time of thousands of lookups."""
        kept = self.read.get(kind)
        if kept is None:
            kept = self.read[kind] = {}
            db = self.db
            if db is not None:
                try:
                    kept.update(db.execute("SELECT key, value FROM memo WHERE kind = ?",
                                           (kind,)))
                except sqlite3.Error:
                    pass
        return kept

    def put(self, k: Key, value: bytes) -> None:
        with self.lock:
            self.used.setdefault(k[0], set()).add(k[1])
            self.new[k] = value

    def flush(self) -> None:
        """Write what this run computed; drop what it did not use when that is most of it
        (only a run that computed something can have made results nobody uses)."""
        with self.lock:
            new, self.new = self.new, {}
            for (kind, k), v in new.items():      # this process reads them again from here
                self._kept(kind)[k] = v
            db = self.db if new else None
            if db is not None:
                self._write(db, new)

    def _write(self, db: sqlite3.Connection, new: dict[Key, bytes]) -> None:
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany("INSERT OR REPLACE INTO memo VALUES (?, ?, ?)",
                               ((kind, k, v) for (kind, k), v in new.items()))
                for kind, used in self.used.items():
                    total = db.execute("SELECT count(*) FROM memo WHERE kind = ?",
                                       (kind,)).fetchone()[0]
                    if total - len(used) > total * self.PRUNE_SHARE:
                        self._prune(db, kind, used)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        except sqlite3.Error:
            pass

    @staticmethod
    def _prune(db: sqlite3.Connection, kind: str, keep: Iterable[bytes]) -> None:
        db.execute("CREATE TEMP TABLE IF NOT EXISTS keep (key BLOB PRIMARY KEY)")
        db.execute("DELETE FROM keep")
        db.executemany("INSERT OR IGNORE INTO keep VALUES (?)", ((k,) for k in keep))
        db.execute("DELETE FROM memo WHERE kind = ? AND key NOT IN (SELECT key FROM keep)",
                   (kind,))

    def close(self) -> None:
        with self.lock:
            if self._db is not None:
                self._db.close()
            self._db, self._opened = None, True
