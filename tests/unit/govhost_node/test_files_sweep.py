"""`files.sweep`: what a killed restore, load or sync left is removed after its age, and
nothing else: not a young entry, not another name, not what a link points at."""
import os
import time

from govhost_node.files import sweep, write_json_shared


def _age(path, seconds):
    t = time.time() - seconds
    os.utime(path, (t, t), follow_symlinks=False)


def test_old_entries_with_the_prefix_go_and_nothing_else(tmp_path):
    keep_target = tmp_path / "elsewhere"
    keep_target.mkdir()
    (keep_target / "precious").write_text("x")
    d = tmp_path / "folder"
    d.mkdir()
    (d / ".incoming-old").write_text("half a copy")
    (d / ".incoming-dir").mkdir()
    (d / ".incoming-dir" / "f").write_text("y")
    (d / ".incoming-link").symlink_to(keep_target)
    (d / ".incoming-young").write_text("a load now")
    (d / "index.db").write_text("the index")
    for name in (".incoming-old", ".incoming-dir", ".incoming-link", "index.db"):
        _age(d / name, 7200)
    removed = sweep(d, 3600, ".incoming-")
    assert sorted(removed) == [".incoming-dir", ".incoming-link", ".incoming-old"]
    assert sorted(os.listdir(d)) == [".incoming-young", "index.db"]
    assert (keep_target / "precious").read_text() == "x"      # the link was not followed


def test_json_written_whole_and_no_temporary_left(tmp_path):
    path = tmp_path / "cache" / "verified.json"
    write_json_shared(str(path), {"a": [1, 2]})
    write_json_shared(str(path), {"b": 3})
    assert path.read_text() == '{"b": 3}'
    assert os.listdir(path.parent) == ["verified.json"]
