"""`lyncgate` as an operator runs it: the installed console script, in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# The console script beside the interpreter running the tests (.venv/bin/lyncgate).
LYNCGATE = str(Path(sys.executable).with_name("lyncgate"))


def lyncgate(*args: str, timeout: float = 60, env: dict[str, str] | None = None,
             cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LYNCGATE, *args], capture_output=True, text=True, timeout=timeout,
                          check=False, env={**os.environ, **(env or {})}, cwd=cwd)
