"""The county as the shell works with it: loaded once at the edge, passed down.

A command (or the exporter) makes one `County` from the inventory directory and hands it to
every layer below. It knows where the state lives (worked out once), loads and validates the
manifests on first use (once), reads the cluster secret and the backup key with them (once),
and points at the certificate store. The pure core never sees it: it takes the plain values
(`county.inv`, a placement, certificates) the shell picks out of it.

The manifests are loaded lazily so that a command that needs only the state (a lock check, the
CA export) does not refuse to run over a manifest being edited, and so that the lock of a
command is taken before its inventory is read, as an operator would expect.
"""
from __future__ import annotations

import threading
import time
from contextlib import AbstractContextManager, contextmanager
from functools import cached_property
from pathlib import Path
from typing import Callable, Iterator, Mapping

from controlplane.core import inventory as inventory_mod
from controlplane.core.certstore import CertStore
from controlplane.core.memo import Memo
from controlplane.core.state import State, exclusive, state_dir


class County:
    def __init__(self, root: Path | str, state: Path | None = None):
        self.root = Path(root)
        self.state_dir = state if state is not None else state_dir(self.root)
        # the trials' own inventory, with the stamp of the files it was read from
        self._trial: tuple[tuple, inventory_mod.Inventory] | None = None
        self._trial_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"County({str(self.root)!r}, state in {str(self.state_dir)!r})"

    @cached_property
    def inv(self) -> inventory_mod.Inventory:
        """The validated manifests, with the secrets they need; raises ManifestError. With
        the memo of the runs before (core/memo.py): what they parsed and rendered."""
        return self.load()

    def load(self, overlay: Mapping[str, bytes] | None = None) -> inventory_mod.Inventory:
        """The manifests read now (`overlay`: files of tenants/ given in place of, or beside,
        those on disk), with the memo; raises ManifestError. Nothing is kept."""
        return inventory_mod.load(self.root, self.state_dir, memo=Memo.of_state(self.state_dir),
                                  overlay=overlay)

    def inv_now(self) -> inventory_mod.Inventory:
        """The manifests as they are on disk now, for a unit's trial (a process that keeps
        its county, the console, judging a unit's change against the county as it is):
        kept apart from `inv`, with a stamp of the files taken before they were read, and
        read again when the stamp differs (a look at each file's metadata, no reading). A
        load that fails raises and keeps nothing: `inv`, which every other page uses, is
        never touched (a stranger's request while an operator's edit is half saved cannot
        take the console down). One load at a time; a stamp of files changed within a
        second of it is not trusted for the next trial."""
        with self._trial_lock:
            taken = inventory_mod.stamp(self.root)
            if self._trial is not None and self._trial[0] == taken:
                return self._trial[1]
            at = time.time_ns()
            self._trial = None
            inv = self.load()
            if inventory_mod.settled(taken, at):
                self._trial = (taken, inv)
            return inv

    def trying(self, inv: inventory_mod.Inventory) -> "County":
        """This county (its state, certificates and secrets) with `inv` in place of its
        manifests: what a unit's trial plans, nothing of it written."""
        c = County(self.root, self.state_dir)
        c.__dict__["inv"] = inv
        return c

    def reloaded(self) -> "County":
        """The same county with its manifests read again (the exporter, after an edit)."""
        return County(self.root, self.state_dir)

    def refresh(self) -> None:
        """Read the manifests again on next use (the console, after a unit was added)."""
        self.__dict__.pop("inv", None)

    @property
    def known_hosts(self) -> Path:
        """The nodes' SSH host keys, learnt on first contact."""
        return self.state_dir / "known_hosts"

    @cached_property
    def certs(self) -> CertStore:
        return CertStore(self.state_dir / "tls")

    def open_state(self) -> State:
        """A connection to the state store. One per unit of work and thread (SQLite's rule);
        the caller closes it."""
        return State(self.state_dir / "state.db")

    @contextmanager
    def state(self) -> Iterator[State]:
        """`open_state()` for one block, closed at its end."""
        st = self.open_state()
        try:
            yield st
        finally:
            st.close()

    def exclusive(self, name: str, busy: Callable[[int], Exception],
                  mode: int = 0o644) -> AbstractContextManager[int]:
        """An exclusive lock `<state dir>/<name>.lock`, see state.exclusive."""
        return exclusive(self.state_dir, name, busy, mode)
