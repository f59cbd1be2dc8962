"""The build step pyproject.toml cannot state: the video translator's modules compiled with
mypyc (docs/architecture.md, "Compiled with mypyc").

They are ordinary, fully typed Python, and run as such wherever they do not compile (no C
compiler or Python headers) or with LYNCGATE_PURE_PYTHON=1 in the install's environment.
Compiled they take half the CPU a packet: bench/relay.py --video put the translating relay
at 0.85x-0.88x the plain one, against 0.74x-0.79x as Python in the same runs.

Beside the compiled modules the build writes `gateway.media.native.RECORD`: the SHA-256 of
each source as it was compiled, so that a build older than an edited source is never what
runs (`gateway.media.native` imports the sources then, and says so).
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "gateway" / "media"))
# native.py imports nothing of the package, so the build reads the list and the record's
# name from the module that checks them at run time.
import native  # noqa: E402

sys.path.pop(0)
SOURCES = [str(Path(*name.split(".")).with_suffix(".py")) for name in native.MODULES]


def _extensions() -> tuple[list[Any], dict[str, str]]:
    """The mypyc extensions and the digests of the sources they are built from; none when
    this install is to be pure Python."""
    if os.environ.get(native.PURE_ENV):
        print(f"lyncgate: {native.PURE_ENV} set: the video translator stays pure Python")
        return [], {}
    digests = {name: native.digest(HERE / source)
               for name, source in zip(native.MODULES, SOURCES, strict=True)}
    try:
        from mypyc.build import mypycify

        extensions = mypycify(SOURCES, opt_level="3", group_name=native.GROUP,
                              target_dir=str(Path("build") / "mypyc"))
    except (SystemExit, Exception) as error:  # mypy's errors exit
        print(f"lyncgate: not compiling the video translator ({error!r}): pure Python")
        return [], {}
    for extension in extensions:
        # No compiler or headers: the install goes on, pure Python.
        extension.optional = True
    return extensions, digests


EXTENSIONS, DIGESTS = _extensions()


class BuildRecorded(build_ext):
    """build_ext that writes the record of what it compiled beside the modules, in the
    build tree (what a wheel carries) and, for an editable install, in the source tree."""

    def run(self) -> None:
        super().run()
        built = all(Path(self.build_lib, self.get_ext_filename(e.name)).exists()
                    for e in self.extensions)
        if not built:
            print("lyncgate: the video translator did not compile: pure Python")
            return
        record = json.dumps({"group": native.GROUP, "sources": DIGESTS}, indent=1)
        places = [Path(self.build_lib, *native.PACKAGE.split("."))]
        if self.inplace or getattr(self, "editable_mode", False):
            places.append(HERE / Path(*native.PACKAGE.split(".")))
        for place in places:
            place.mkdir(parents=True, exist_ok=True)
            (place / native.RECORD).write_text(record + "\n")


# An editable install with extension modules makes setuptools warn, at every install, that
# folders named like the packages in the working directory could be imported instead: the
# packages are those folders here.
warnings.filterwarnings("ignore", message="Editable installation")
setup(ext_modules=EXTENSIONS, cmdclass={"build_ext": BuildRecorded})
