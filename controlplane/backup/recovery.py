"""The county recovery key and what a control-machine snapshot holds: pure functions.

Why a key of its own: the node repository's password is derived from the cluster secret, and
the cluster secret lives on the control machine. When that disk is lost, so is the secret. The
recovery key is printed once (`govhost control init`) and kept on paper. From it alone come
the control repositories' password and the SSH key that may open them, so a bare machine needs
nothing but that sheet and the backup node's address.

The key is 32 random bytes and a 3-byte check, in base32 in groups of four (56 letters and
digits). A mistyped key is refused by its check before any repository sees it.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Iterable, Mapping

from controlplane.core.errors import GovhostError

KEY_BYTES = 32
CHECK_BYTES = 3
FORMAT = 1                    # of MANIFEST.json; a restore refuses a format it does not know
MANIFEST = "MANIFEST.json"
SNAPSHOT_DIR = "govhost-control"   # the directory a control snapshot is made of
RECOVERY_COMMENT = "govhost-recovery"
# The account that holds the control repositories, on the backup node and off-site. Not the
# nodes' `govhost-backup`: every node has that account's key, and must not reach these.
CONTROL_USER = "govhost-control"

# Never in a control snapshot. Locks and work areas are of one moment; caches and Ansible's
# artefacts are rebuilt; the recovery key must not sit inside the repositories it opens.
STATE_EXCLUDED = frozenset({
    "recovery-key", "state.db", "state.db-wal", "state.db-shm", "state.db-journal",
    "restic-cache", "backup-work", "control-work", "security", "search", "payloads",
    "restore-pending.json", "schema-copies", "memo",
})
STATE_EXCLUDED_SUFFIXES = (".lock", ".tmp", ".pid", ".log")
STATE_EXCLUDED_PREFIXES = ("runner", ".")
RELEASE = re.compile(r"^[0-9]{8}T[0-9]{6}-[0-9a-f]{6}$")   # a content release's id
TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


class RecoveryKeyError(GovhostError):
    pass


def _check(raw: bytes) -> bytes:
    return hashlib.sha256(b"govhost-recovery-check" + raw).digest()[:CHECK_BYTES]


def format_key(raw: bytes) -> str:
    """The key as printed: base32 of key and check, in groups of four."""
    if len(raw) != KEY_BYTES:
        raise RecoveryKeyError(f"a recovery key is {KEY_BYTES} bytes, not {len(raw)}")
    text = base64.b32encode(raw + _check(raw)).decode()
    return "-".join(text[i:i + 4] for i in range(0, len(text), 4))


def parse_key(text: str) -> bytes:
    """The key from what a person typed: case, spaces and dashes do not matter; 0/1/8 typed
    for O/I/B are read as the letters base32 has. A wrong letter fails the check."""
    cleaned = re.sub(r"[\s\-]", "", text).upper().translate(str.maketrans("018", "OIB"))
    want = (KEY_BYTES + CHECK_BYTES) * 8 // 5
    if not re.fullmatch(r"[A-Z2-7]*", cleaned):
        bad = sorted(set(re.sub(r"[A-Z2-7]", "", cleaned)))
        raise RecoveryKeyError(f"a recovery key has only the letters A-Z and digits 2-7; "
                               f"found {''.join(bad)!r}")
    if len(cleaned) != want:
        raise RecoveryKeyError(f"a recovery key has {want} letters and digits (14 groups of "
                               f"4); this one has {len(cleaned)}")
    data = base64.b32decode(cleaned)
    raw, check = data[:KEY_BYTES], data[KEY_BYTES:]
    if not hmac.compare_digest(check, _check(raw)):
        raise RecoveryKeyError("the recovery key's check does not match: a letter is wrong "
                               "or missing; compare it with the sheet group by group")
    return raw


def _derive(raw: bytes, purpose: str) -> bytes:
    return hmac.new(raw, purpose.encode(), hashlib.sha256).digest()


def restic_password(raw: bytes) -> str:
    return base64.b32encode(_derive(raw, "control-restic")).decode().rstrip("=").lower()


def fingerprint(raw: bytes) -> str:
    """What may be shown of a key without giving it away (logs, `status`)."""
    return _derive(raw, "fingerprint").hex()[:16]


def ssh_private_key(raw: bytes) -> bytes:
    """The OpenSSH private key that may open the control repositories (SFTP only)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.from_private_bytes(_derive(raw, "control-ssh"))
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                             serialization.NoEncryption())


def ssh_public_key(raw: bytes) -> str:
    """The same key's public half: the same at every apply (it goes into backup.json)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.from_private_bytes(_derive(raw, "control-ssh"))
    pub = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                        serialization.PublicFormat.OpenSSH).decode()
    return f"{pub} {RECOVERY_COMMENT}"


def control_path(repository_path: str) -> str:
    """Where the control repository sits: beside the node repository it belongs with, in a
    home of its own for its own account (`/srv/govhost/backup/repo` →
    `/srv/govhost/backup/repo-control/repo`, account home `…/repo-control`)."""
    return str(PurePosixPath(repository_path)) + "-control/repo"


def state_file_kept(rel: str) -> bool:
    """Whether a file of the state directory (path relative to it) goes into the snapshot."""
    top = rel.split("/", 1)[0]
    if top in STATE_EXCLUDED or top.startswith(STATE_EXCLUDED_PREFIXES):
        return False
    return not rel.endswith(STATE_EXCLUDED_SUFFIXES)


def inventory_file_kept(rel: str, state_rel: str | None) -> bool:
    """Whether a file of the inventory goes in: everything but the state directory (taken
    apart) and editors' leftovers."""
    if state_rel is not None and (rel == state_rel or rel.startswith(state_rel + "/")):
        return False
    name = rel.rsplit("/", 1)[-1]
    return not (name.endswith(("~", ".swp")) or name.startswith(".#"))


@dataclass(frozen=True)
class Manifest:
    """What one control snapshot holds and where it came from."""
    made_at: float
    host: str
    inventory: str            # absolute path of the inventory on the machine it came from
    state_dir: str
    ssh_key: str | None       # hosts.yaml's ssh.key, when it was a file of that machine
    files: Mapping[str, str]  # "inventory/…", "state/…", "ssh/key" -> sha256
    tables: Mapping[str, int]  # row count of every table of state.db
    audit_last: float | None  # the newest audit entry's time
    applied: Mapping[str, str]  # node -> config release id, as the state knew it
    live: Mapping[str, str]   # unit -> live content release id, as the state knew it
    skipped: tuple[str, ...] = ()  # links and other non-files met, not in the snapshot

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, **self.__dict__}, ensure_ascii=False,
                          sort_keys=True, indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "Manifest":
        data = json.loads(text)
        if data.get("format") != FORMAT:
            raise ValueError(f"snapshot format {data.get('format')!r}; this govhost reads "
                             f"format {FORMAT} (restore with the govhost release that made it)")
        data.pop("format")
        data["skipped"] = tuple(data.get("skipped") or ())
        return cls(**data)


def compare_files(manifest: Mapping[str, str], found: Mapping[str, str]) -> dict[str, list[str]]:
    """Files missing, changed or not listed: all empty for an intact snapshot."""
    return {"missing": sorted(set(manifest) - set(found)),
            "changed": sorted(k for k in manifest if k in found and found[k] != manifest[k]),
            "unlisted": sorted(set(found) - set(manifest))}


def after_snapshot(manifest: Manifest, node_releases: Mapping[str, str | None],
                   node_live: Mapping[str, Mapping[str, str | None]],
                   placement: Mapping[str, Iterable[str]],
                   state_live: Mapping[str, str]) -> dict[str, Any]:
    """What the nodes show happened after the snapshot was taken.

    `node_releases`: reachable node -> config release it runs; `node_live`: reachable node ->
    unit -> its current content release there; `placement`: unit -> its replicas (the units of
    the restored inventory, nothing else); `state_live`: unit -> the live release the restored
    state records. A unit whose reachable replicas all serve one release other than the
    state's (a publish, an approval, a rollback after the snapshot) is in `live_after`; one
    whose replicas disagree is in `disagree`, and one of whose two or more replicas only one
    answered in `unjudged`, both for the operator: a single node's word never makes a release
    live (a unit with one replica has only that word). A config release other than the one the state recorded means an
    apply ran after the snapshot."""
    applied_after = {n: r for n, r in sorted(node_releases.items())
                     if r and manifest.applied.get(n) and r != manifest.applied[n]}
    live_after: dict[str, dict[str, Any]] = {}
    disagree: dict[str, dict[str, str | None]] = {}
    unjudged: dict[str, dict[str, str | None]] = {}
    for unit, replicas in sorted(placement.items()):
        replicas = list(replicas)
        seen = {n: node_live[n].get(unit) for n in replicas if n in node_live}
        ids = set(seen.values())
        if not seen or ids == {state_live.get(unit)}:
            continue
        if len(seen) < min(2, len(replicas)):      # one answer of two or more replicas
            unjudged[unit] = dict(sorted(seen.items()))
        elif len(ids) == 1 and all(r is not None and RELEASE.match(r) for r in ids):
            live_after[unit] = {"release": ids.pop(), "nodes": sorted(seen),
                                "was": state_live.get(unit)}
        else:
            disagree[unit] = dict(sorted(seen.items()))
    return {"applied_after": applied_after, "live_after": live_after, "disagree": disagree,
            "unjudged": unjudged}
