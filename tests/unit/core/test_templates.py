"""Compiled templates kept between runs: used when the source is the same, compiled again
when it changed, never loaded from a directory somebody else can write."""
import os

import jinja2
import pytest

from controlplane.core import templates


@pytest.fixture
def cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "govhost" / "templates"


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


def test_no_cache_directory_to_be_had_means_compiling_every_time(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "file"))    # not a directory
    assert templates.cache_dir() is None


def test_a_cache_that_cannot_be_written_never_fails_a_render(tmp_path, monkeypatch, cache_home):
    _templates(tmp_path, monkeypatch, "ok\n")
    env = templates.environment("t")
    env.bytecode_cache.directory = str(tmp_path / "gone")      # removed under it
    assert env.get_template("t.j2").render() == "ok"
