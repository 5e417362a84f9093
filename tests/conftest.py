import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "inventory"


@pytest.fixture
def inv_dir(tmp_path: Path) -> Path:
    """A private copy of the example inventory (without any state)."""
    dest = tmp_path / "inventory"
    shutil.copytree(EXAMPLE, dest, ignore=shutil.ignore_patterns(".govhost"))
    return dest
