"""The video translator compiled with mypyc (setup.py, gateway.media.native): a build is run
only while it is of the sources beside it, and falls back to them whole otherwise (edited
source, part of the build missing, no record, LYNCGATE_PURE_PYTHON); compiled and pure
Python give the same packets, counters and wishes for the same streams; the suite's own
install (CI) is compiled, so the relay's figures are those of what runs."""

from __future__ import annotations

import importlib.machinery
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.media import TRANSLATOR_BUILD, native

ROOT = Path(__file__).resolve().parents[2]
SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]


def package(tmp_path: Path, *, built: tuple[str, ...] = (*native.MODULES, native.LIBRARY),
            record: bool = True) -> Path:
    """A package directory like gateway/media: the sources, `built` as (empty) extension
    modules, and the record of their build."""
    for module in native.MODULES:
        native.source(module, tmp_path).write_text(f"NAME = {module!r}\n")
    for module in built:
        (tmp_path / (module.rsplit(".", 1)[1] + SUFFIX)).write_bytes(b"")
    if record:
        sources = {m: native.digest(native.source(m, tmp_path)) for m in native.MODULES}
        (tmp_path / native.RECORD).write_text(json.dumps({"sources": sources}))
    return tmp_path


def test_a_build_of_the_sources_beside_it_is_run(tmp_path: Path) -> None:
    assert native.read_build({}, package(tmp_path)) == native.Build(True, "compiled with mypyc")


def test_an_edited_source_makes_the_whole_translator_pure_python(tmp_path: Path) -> None:
    where = package(tmp_path)
    with native.source("gateway.media.h264uc", where).open("a") as source:
        source.write("# edited after the build\n")
    build = native.read_build({}, where)
    assert not build.compiled
    assert "(gateway.media.h264uc)" in build.why and "scripts/install" in build.why


@pytest.mark.parametrize("missing", [native.LIBRARY, "gateway.media.video_translate"])
def test_a_build_in_part_is_not_run(tmp_path: Path, missing: str) -> None:
    where = package(tmp_path, built=tuple(m for m in (*native.MODULES, native.LIBRARY)
                                          if m != missing))
    build = native.read_build({}, where)
    assert not build.compiled and "part of the build is missing" in build.why


@pytest.mark.parametrize("text", [None, "{not json", '{"sources": ["a list"]}', "[1]"])
def test_a_build_without_a_readable_record_is_not_run(tmp_path: Path, text: str | None) -> None:
    where = package(tmp_path, record=False)
    if text is not None:
        (where / native.RECORD).write_text(text)
    build = native.read_build({}, where)
    assert not build.compiled and native.RECORD in build.why


def test_no_build_and_the_switch_are_told_apart(tmp_path: Path) -> None:
    assert "not compiled at install" in native.read_build({}, package(tmp_path, built=())).why
    assert native.read_build({native.PURE_ENV: "1"}, package(tmp_path)) == native.Build(
        False, f"pure Python: {native.PURE_ENV} is set")


def _digest(env: dict[str, str]) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-m", "tests.kit.translator_digest"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120, check=True)
    result: dict[str, object] = json.loads(done.stdout)
    return result


@pytest.mark.skipif(not TRANSLATOR_BUILD.compiled,
                    reason=f"nothing to compare: this install runs {TRANSLATOR_BUILD.why}")
def test_compiled_and_pure_python_translate_alike() -> None:
    env = {k: v for k, v in os.environ.items() if k != native.PURE_ENV}
    compiled = _digest(env)
    pure = _digest({**env, native.PURE_ENV: "1"})
    assert compiled["compiled"] is True and pure["compiled"] is False
    assert compiled["digest"] == pure["digest"]


@pytest.mark.skipif(not TRANSLATOR_BUILD.compiled, reason="no build to step around")
def test_the_switch_imports_the_sources_in_place_of_the_build() -> None:
    code = ("import gateway.media.video_translate as v, gateway.media.h264 as h;"
            "print(v.__file__, h.__file__)")
    env = {**os.environ, native.PURE_ENV: "1"}
    files = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True,
                           capture_output=True, text=True, timeout=60).stdout.split()
    assert files == [str(native.source("gateway.media.video_translate")),
                     str(native.source("gateway.media.h264"))]


@pytest.mark.skipif(not os.environ.get("CI"), reason="only CI's install must compile")
def test_the_suites_install_compiles_the_translator() -> None:
    """scripts/install brings a C compiler and the Python headers: the benchmarks' and the
    daemon's translator is the compiled one, and a build that fell back is seen here."""
    assert TRANSLATOR_BUILD.compiled, TRANSLATOR_BUILD.why
