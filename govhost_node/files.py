"""Writing the node's own settings files: only when their content changes (so a caller knows
whether to reload something), and atomically (a reader never sees half a file)."""
from __future__ import annotations

import os


def write_if_changed(path: str, text: str, mode: int = 0o644,
                     owner: tuple[int, int] | None = None) -> bool:
    """Write `text` to `path` unless it holds that already; True when it was written. The
    mode is set either way (a file found with a wrong mode is put right)."""
    try:
        with open(path, encoding="utf-8") as f:
            if f.read() == text:
                os.chmod(path, mode)
                return False
    except OSError:
        pass
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    if owner is not None:
        os.chown(tmp, *owner)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
    return True
