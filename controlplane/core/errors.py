"""Typed errors of the control plane.

The CLI turns each of these into one clear message and an exit code; a traceback is shown only
with ``--debug``. Errors that concern input carry every problem found, not just the first.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input: where it is and what is allowed instead."""

    file: str
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}: {self.field}: " if self.field else f"{self.file}: "
        return where + self.message


class GovhostError(Exception):
    """Base of all errors the CLI reports without a traceback."""


class ManifestError(GovhostError):
    """The inventory (cluster, hosts or tenant manifests) was refused; nothing was touched."""

    def __init__(self, problems: list[Problem]):
        self.problems = sorted(problems, key=lambda p: (p.file, p.field, p.message))
        super().__init__("\n".join(str(p) for p in self.problems))


class PlacementError(GovhostError):
    """Tenants cannot be placed on the nodes available (capacity, drained nodes)."""


class ApplyError(GovhostError):
    """An apply failed; the message names the node and, where known, the tenant."""


class LockError(GovhostError):
    """Another govhost run holds the exclusive lock."""


class NodeError(GovhostError):
    """A node could not be replaced, added, removed or handed over as asked."""


class LabError(GovhostError):
    """The lab cluster could not be brought up or down."""
