"""A restic key file whose password stretching costs milliseconds instead of a second.

Every restic process opens its repository by running scrypt over the password with the
parameters in the key file. `restic init` calibrates them to half a second of one core on the
machine that made the repository (N=2^15, r=8, p=6 here); on a node sharing its cores under a
nightly run that is about a second, paid once per snapshot, and a night of one snapshot per
changed unit is mostly key derivations. Stretching protects a password a person chose. The
repository's password is 32 base32 characters (160 bits) derived from the cluster secret: no
guessing is shortened by a cheaper derivation, so the key file is written again with a cost
that protects nothing less.

The format is restic's (doc/design.rst, "Keys, Encryption and MAC"): the key file is JSON whose
`data` is the repository's master key, encrypted with the key scrypt derives from the password
— AES-256-CTR under a random IV, then Poly1305-AES over the ciphertext — and named by the
SHA-256 of its bytes. Only restic itself reads what this writes: `check` opens the repository
with the new key before the old one is removed (govhost_node/backup.py).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import socket
import time

# 2^12 × 8 × 128 bytes = 4 MiB of memory; about 10 ms of one core here.
LIGHT = {"N": 1 << 12, "r": 8, "p": 1}
SALT_BYTES = 64
NAME = re.compile(r"[0-9a-f]{64}")
MAX_KEYS = 20              # restic tries this many key files before it gives up


def cost(params: dict) -> int:
    """scrypt's work, in units of one N=1 block: what opening with this key costs (0 for
    parameters that are not three positive integers)."""
    try:
        n, r, p = (params.get(k) for k in ("N", "r", "p"))
        if not all(type(v) is int and v > 0 for v in (n, r, p)):
            return 0
        return n * r * p
    except Exception:  # noqa: BLE001 - whatever a planted key file holds
        return 0


def is_light(key_file: dict) -> bool:
    return key_file.get("kdf") == "scrypt" and 0 < cost(key_file) <= cost(LIGHT)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _unb64(text: str, size: int, what: str) -> bytes:
    raw = base64.b64decode(text, validate=True)
    if len(raw) != size:
        raise ValueError(f"the master key's {what} is {len(raw)} bytes, not {size}")
    return raw


def _user_key(password: str, params: dict, salt: bytes) -> tuple[bytes, bytes, bytes]:
    """The encryption key, MAC k and MAC r that scrypt derives from the password."""
    n, r, p = int(params["N"]), int(params["r"]), int(params["p"])
    derived = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p,
                             maxmem=128 * r * (n + p + 2) + (1 << 20), dklen=64)
    return derived[:32], derived[32:48], derived[48:64]


def _mac_tag(mac_k: bytes, mac_r: bytes, iv: bytes, ciphertext: bytes) -> bytes:
    """Poly1305-AES as restic uses it: r (Poly1305 clamps it) and s = AES_k(IV)."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from cryptography.hazmat.primitives.poly1305 import Poly1305

    block = Cipher(algorithms.AES(mac_k), modes.ECB()).encryptor()  # one block: AES_k(IV)
    s = block.update(iv) + block.finalize()
    return Poly1305.generate_tag(mac_r + s, ciphertext)


# A key restic calibrated here is N=2^15, r=8, p=6 (32 MiB, 1.5 M blocks, half a second).
# One that would take more than 128 MiB or twice that work is not tried: restic did not
# make it here, and a planted one must not cost root more than a second or so.
MAX_MEMORY_TRIED = 128 << 20
MAX_COST_TRIED = 2 * (1 << 15) * 8 * 6


def opens(password: str, key_file: dict) -> bool:
    """Whether `password` opens this key file: its MAC checks. Only such keys are replaced;
    a key an operator added with a password of their own is left as it is."""
    try:
        n, r, p = int(key_file["N"]), int(key_file["r"]), int(key_file["p"])
        if key_file.get("kdf") != "scrypt" or not 0 < cost(key_file) <= MAX_COST_TRIED \
                or min(n, r, p) < 1 or 128 * r * (n + p) > MAX_MEMORY_TRIED:
            return False
        salt = base64.b64decode(key_file["salt"], validate=True)
        data = base64.b64decode(key_file["data"], validate=True)
        if len(data) < 33 or len(salt) < 8:
            return False
        _, mac_k, mac_r = _user_key(password, key_file, salt)
    except Exception:  # noqa: BLE001 - a planted file of any shape is simply not ours
        return False
    return hmac.compare_digest(_mac_tag(mac_k, mac_r, data[:16], data[16:-16]), data[-16:])


def seal(password: str, master: dict, user: str = "govhost") -> tuple[str, bytes]:
    """A key file for `master` (what `restic cat masterkey` prints) under `password`: its
    repository name (the SHA-256 of its bytes) and its bytes."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    # Checked before anything is written: a master key restic could not read back would lock
    # the repository once the old key is removed.
    _unb64(master["encrypt"], 32, "encryption key")
    _unb64(master["mac"]["k"], 16, "MAC k")
    _unb64(master["mac"]["r"], 16, "MAC r")
    salt = os.urandom(SALT_BYTES)
    enc_key, mac_k, mac_r = _user_key(password, LIGHT, salt)
    plain = json.dumps({"mac": {"k": master["mac"]["k"], "r": master["mac"]["r"]},
                        "encrypt": master["encrypt"]}).encode()
    iv = os.urandom(16)
    encryptor = Cipher(algorithms.AES(enc_key), modes.CTR(iv)).encryptor()
    ciphertext = encryptor.update(plain) + encryptor.finalize()
    tag = _mac_tag(mac_k, mac_r, iv, ciphertext)
    body = {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "username": user, "hostname": socket.gethostname(), "kdf": "scrypt",
            **LIGHT, "salt": _b64(salt), "data": _b64(iv + ciphertext + tag)}
    raw = json.dumps(body).encode()
    return hashlib.sha256(raw).hexdigest(), raw
