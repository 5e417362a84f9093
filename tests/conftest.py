import shutil
from pathlib import Path

import pytest
from hypothesis import settings

# Property tests judge results, never wall time: no deadline per example. The unit tests
# run beside the lab's (scripts/test.sh), and a busy CPU must not fail a correct example.
settings.register_profile("govhost", deadline=None)
settings.load_profile("govhost")

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "inventory"


@pytest.fixture
def inv_dir(tmp_path: Path) -> Path:
    """A private copy of the example inventory (without any state)."""
    dest = tmp_path / "inventory"
    shutil.copytree(EXAMPLE, dest, ignore=shutil.ignore_patterns(".govhost"))
    return dest
