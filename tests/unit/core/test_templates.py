"""Compiled templates kept between runs: used when the source is the same, compiled again
when it changed, never loaded from a directory somebody else can write."""
import os
from types import SimpleNamespace

import jinja2
import pytest

from controlplane.core import templates


@pytest.fixture
def cache_home(tmp_path, monkeypatch):
    """The account's home (from the password database) is a directory of the test's own."""
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    monkeypatch.setattr(templates.pwd, "getpwuid", lambda uid: SimpleNamespace(pw_dir=str(home)))
    return home / ".cache" / "govhost" / "templates"


def _templates(tmp_path, monkeypatch, text):
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    (src / "t.j2").write_text(text)
    monkeypatch.setattr(templates.paths, "TEMPLATES", src)


def _compiles(env, monkeypatch) -> list[str]:
    seen = []
    real = env.compile
    monkeypatch.setattr(env, "compile", lambda *a, **k: seen.append(a[1]) or real(*a, **k))
    return seen


def test_a_second_run_loads_the_compiled_code_and_a_changed_source_compiles_again(
        tmp_path, monkeypatch, cache_home):
    _templates(tmp_path, monkeypatch, "hello {{ name }}\n")
    first = templates.environment("t", undefined=jinja2.StrictUndefined)
    assert _compiles(first, monkeypatch) is not None
    assert first.get_template("t.j2").render(name="n1") == "hello n1"
    assert [p.name.startswith("t-") for p in cache_home.iterdir()] == [True]
    assert jinja2.__version__ not in str(cache_home)    # in the name's hash, not spelled out
    assert oct(cache_home.stat().st_mode & 0o777) == "0o700"

    second = templates.environment("t", undefined=jinja2.StrictUndefined)
    seen = _compiles(second, monkeypatch)
    assert second.get_template("t.j2").render(name="n2") == "hello n2"
    assert seen == []                       # loaded, not compiled

    (tmp_path / "src" / "t.j2").write_text("bye {{ name }}\n")
    third = templates.environment("t", undefined=jinja2.StrictUndefined)
    seen = _compiles(third, monkeypatch)
    assert third.get_template("t.j2").render(name="n3") == "bye n3"
    assert seen == ["t.j2"]


def test_other_options_keep_their_own_files(tmp_path, monkeypatch, cache_home):
    _templates(tmp_path, monkeypatch, "{% if x %}\n<{{ x }}>\n{% endif %}\n")
    plain = templates.environment("plain").get_template("t.j2").render(x="a&b")
    trimmed = templates.environment("trim", trim_blocks=True, autoescape=True)
    assert trimmed.get_template("t.j2").render(x="a&b") == "<a&amp;b>\n"
    assert plain == "\n<a&b>\n"
    assert sorted(p.name.split("-")[0] for p in cache_home.iterdir()) == ["plain", "trim"]


def test_changed_options_or_finalize_compile_again(tmp_path, monkeypatch, cache_home):
    """A tightened finalize reaches the constants Jinja folds at compile time."""
    _templates(tmp_path, monkeypatch, "{{ 'a;b' }}\n")
    loose = templates.environment("conf", finalize=lambda v: v)
    assert loose.get_template("t.j2").render() == "a;b"

    def strict(v):
        raise ValueError(f"refusing {v!r}")
    tight = templates.environment("conf", finalize=strict)
    seen = _compiles(tight, monkeypatch)
    with pytest.raises(ValueError, match="refusing"):
        tight.get_template("t.j2").render()
    assert seen == ["t.j2"]
    assert len(list(cache_home.iterdir())) == 2      # a file for each finalize


def test_a_directory_others_can_write_is_not_used(tmp_path, monkeypatch, cache_home):
    cache_home.mkdir(parents=True)
    os.chmod(cache_home, 0o777)
    assert templates.cache_dir() is None
    _templates(tmp_path, monkeypatch, "x\n")
    env = templates.environment("t")
    assert env.bytecode_cache is None and env.get_template("t.j2").render() == "x"
    assert list(cache_home.iterdir()) == []


def test_a_directory_of_another_owner_is_not_used(cache_home):
    cache_home.mkdir(parents=True, mode=0o700)
    os.chown(cache_home, 12345, 12345)
    assert templates.cache_dir() is None


def test_a_parent_somebody_else_can_write_or_own_is_not_used(cache_home):
    """Whoever can write a parent could swap the whole directory for one of theirs."""
    cache_home.mkdir(parents=True, mode=0o700)
    assert templates.cache_dir() == cache_home
    os.chmod(cache_home.parent, 0o777)
    assert templates.cache_dir() is None
    os.chmod(cache_home.parent, 0o755)
    os.chown(cache_home.parent.parent, 12345, 12345)
    assert templates.cache_dir() is None


def test_home_comes_from_the_password_database_not_the_environment(tmp_path, monkeypatch,
                                                                   cache_home):
    """`sudo -E` keeps another user's $HOME and $XDG_CACHE_HOME: never read from there."""
    other = tmp_path / "other"
    monkeypatch.setenv("HOME", str(other))
    monkeypatch.setenv("XDG_CACHE_HOME", str(other / ".cache"))
    assert templates.cache_dir() == cache_home
    assert not other.exists()


def test_no_cache_directory_to_be_had_means_compiling_every_time(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    monkeypatch.setattr(templates.pwd, "getpwuid",
                        lambda uid: SimpleNamespace(pw_dir=str(tmp_path / "file")))
    assert templates.cache_dir() is None


def test_a_cache_that_cannot_be_written_never_fails_a_render(tmp_path, monkeypatch, cache_home):
    _templates(tmp_path, monkeypatch, "ok\n")
    env = templates.environment("t")
    env.bytecode_cache.directory = str(tmp_path / "gone")      # removed under it
    assert env.get_template("t.j2").render() == "ok"
