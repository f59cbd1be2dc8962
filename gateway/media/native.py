"""Whether the video translator (MODULES) runs compiled. setup.py compiles it with mypyc at
install when it can, and records the digest of each source it compiled (RECORD). A compiled
build is used only while every source is still the one it was built from: an edited source
(an editable install not installed again), an incomplete build or LYNCGATE_PURE_PYTHON set
when the process starts all make the sources be imported instead. All of them or none: the
compiled modules of one group call each other directly, not through imports.

Imports nothing of the package: setup.py reads it before the package is built."""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

PACKAGE = "gateway.media"
MODULES = ("gateway.media.h264", "gateway.media.h264uc", "gateway.media.video_translate")
GROUP = "gateway.media.video_native"
LIBRARY = GROUP + "__mypyc"  # the group's shared library, which the modules' shims load
RECORD = "native-build.json"
PURE_ENV = "LYNCGATE_PURE_PYTHON"
HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Build:
    compiled: bool
    why: str  # what the status API and the daemon's start-up log say of it

    def as_dict(self) -> dict[str, object]:
        return {"compiled": self.compiled, "why": self.why}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def source(module: str, where: Path = HERE) -> Path:
    return where / (module.rsplit(".", 1)[1] + ".py")


def compiled_file(module: str, where: Path = HERE) -> Path | None:
    """The extension module that the import system prefers to `module`'s source, if any."""
    stem = module.rsplit(".", 1)[1]
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        if (candidate := where / (stem + suffix)).exists():
            return candidate
    return None


def read_build(environ: Mapping[str, str] = os.environ, where: Path = HERE) -> Build:
    """What a process started with `environ` runs of the package in `where`: the compiled
    build, or the sources and why."""
    if environ.get(PURE_ENV):
        return Build(False, f"pure Python: {PURE_ENV} is set")
    built = [compiled_file(module, where) is not None for module in (*MODULES, LIBRARY)]
    if not any(built):
        return Build(False, "pure Python: not compiled at install (no C compiler, or "
                     f"{PURE_ENV} set at install)")
    try:
        digests = json.loads((where / RECORD).read_text())["sources"]
    except (OSError, ValueError, KeyError, TypeError):
        digests = None
    if not isinstance(digests, dict):
        return Build(False, f"pure Python: the compiled build has no readable {RECORD}")
    changed = [m for m in MODULES if digests.get(m) != digest(source(m, where))]
    if changed or not all(built):
        what = ", ".join(changed) if changed else "part of the build is missing"
        return Build(False, f"pure Python: the compiled build is not of these sources "
                     f"({what}): run scripts/install again to compile them")
    return Build(True, "compiled with mypyc")


class _Sources(importlib.abc.MetaPathFinder):
    """Finds MODULES as their source files, ahead of the extension modules beside them."""

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MODULES:
            return None
        return importlib.util.spec_from_file_location(fullname, source(fullname))


def settle(environ: Mapping[str, str] = os.environ) -> Build:
    """Decide, before any of MODULES is imported, which of the two this process runs."""
    build = read_build(environ)
    # Where nothing was compiled the finder finds what the import system would.
    if not build.compiled and not any(isinstance(f, _Sources) for f in sys.meta_path):
        sys.meta_path.insert(0, _Sources())
    return build
