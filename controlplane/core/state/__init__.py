"""The state store: what was applied where, placements, drained nodes, content releases,
backups, observations, certificates, runs and the audit log, in one SQLite database.

One module per capability holds its records; `State` is all of them over one connection.
The schema and its migrations are in schema.py.
"""
from __future__ import annotations

from controlplane.core.state.backups import BackupRecords
from controlplane.core.state.certs import CertificateRecords
from controlplane.core.state.content import ContentRecords
from controlplane.core.state.messages import MessageRecords
from controlplane.core.state.nodes import AppliedNode, NodeRecords
from controlplane.core.state.observations import ObservationRecords
from controlplane.core.state.onboarding import OnboardingRecords
from controlplane.core.state.schema import SCHEMA_VERSION, StateSchemaError
from controlplane.core.state.store import RESTORE_PENDING, Store, actor, exclusive, state_dir

__all__ = ["AppliedNode", "RESTORE_PENDING", "SCHEMA_VERSION", "State", "StateSchemaError",
           "Store", "actor", "exclusive", "state_dir"]


class State(NodeRecords, ContentRecords, OnboardingRecords, BackupRecords, ObservationRecords,
            CertificateRecords, MessageRecords):
    """Every capability's records over one connection to `<state>/state.db`."""
