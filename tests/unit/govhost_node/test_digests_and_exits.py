"""One owner each: the digest list format (govhost_node/digests.py) and the exit codes the
control machine acts on (govhost_node/exits.py, raised by govhost-node and read by apply)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from govhost_node import digests, exits

REPO = Path(__file__).resolve().parents[3]

# Any character a file name put there over SFTP may hold but a line break and a backslash
# (refused by the node's publish): U+2028, \x85, \x0c and \r included.
segment = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/\\\n\0"),
                  min_size=1, max_size=12).filter(lambda s: s not in (".", "..")
                                                  and s.strip() == s)
paths = st.lists(segment, min_size=1, max_size=4).map("/".join)
hexes = st.text("0123456789abcdef", min_size=64, max_size=64)


@given(st.dictionaries(paths, hexes, max_size=30))
def test_a_list_reads_back_as_it_was_written(mapping):
    text = digests.format_list(mapping)
    assert digests.parse(text) == mapping
    assert text == digests.format_list(dict(reversed(list(mapping.items()))))  # sorted


def test_names_with_other_line_separators_read_back():
    names = {"a\u2028b.html": "0" * 64, "c\x0cd\x85e.html": "1" * 64, "f\rg.html": "2" * 64,
             "h\x1ci\u2029j.html": "3" * 64}
    assert digests.parse(digests.format_list(names)) == names


def test_sha256sum_checks_what_govhost_writes(tmp_path):
    """The node checks a release with `sha256sum -c`: the format must be sha256sum's."""
    import hashlib
    files = {"index.html": "首页".encode(), "news/2026/通知 一.html": b"x" * 5000}
    for name, data in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    digests.write(str(tmp_path), {n: hashlib.sha256(d).hexdigest() for n, d in files.items()})
    check = ["sha256sum", "--quiet", "--strict", "-c", digests.NAME]
    assert subprocess.run(check, cwd=tmp_path, capture_output=True).returncode == 0
    (tmp_path / "index.html").write_bytes("改过".encode())
    assert subprocess.run(check, cwd=tmp_path, capture_output=True).returncode != 0
    assert digests.read(str(tmp_path)).keys() == files.keys()


@pytest.mark.parametrize("line", ["abc  index.html", "0" * 64 + " index.html",
                                  "0" * 64 + "  ", "G" * 64 + "  a"])
def test_a_damaged_line_is_refused_by_number_not_dropped(line):
    with pytest.raises(ValueError, match="line 2"):
        digests.parse("0" * 64 + "  ok.html\n" + line + "\n")


def test_the_exit_codes_are_one_definition_for_both_sides():
    assert (exits.NGINX_REFUSED, exits.BASE_MISSING) == (3, 4)
    node_side = "".join((REPO / "govhost_node" / name).read_text()
                        for name in ("node.py", "releases.py"))
    assert not re.search(r"NodeExit\([^)]*, [34]\)", node_side), "use the names in exits.py"
    assert "exits.NGINX_REFUSED" in node_side and "exits.BASE_MISSING" in node_side
    control_side = (REPO / "controlplane" / "sites" / "apply.py").read_text()
    assert "exits.NGINX_REFUSED" in control_side and "exits.BASE_MISSING" in control_side
    assert not re.search(r"rc == [34]\b", control_side)


def test_govhost_node_runs_from_the_source_tree():
    """As the tests run it (`python -m govhost_node.node`); on a node, the installed command."""
    r = subprocess.run([sys.executable, "-m", "govhost_node.node", "no-such-step"], cwd=REPO,
                       capture_output=True, text=True)
    assert r.returncode == 1 and "usage: govhost-node" in r.stderr, r.stderr
