"""gateway.logs in a process of its own (configuring structlog is process-wide, and the other
tests rely on its unconfigured defaults, as structlog.testing.capture_logs needs)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    from gateway import logs
    early = logs.get("early")  # made at import time, as module loggers are
    logs.configure(json=True, level="warning")
    early.info("dropped")
    early.warning("kept", n=1)
    assert not early.is_enabled_for(20)
    late = logs.get("late")
    late.info("dropped too")
    late.error("kept too")
    logs.configure(json=True, level="info")
    early.info("kept after reconfiguring")
    assert early.is_enabled_for(20)
""")


def test_loggers_made_before_and_after_configure_follow_the_level_set_last() -> None:
    """Module loggers get their level methods pinned when configured (a speed-up over
    structlog's proxy); lines below the level are dropped, the component is bound, and
    configuring again takes effect for loggers already used."""
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          timeout=60, check=True)
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    assert [(e["component"], e["event"], e["level"]) for e in lines] == [
        ("early", "kept", "warning"),
        ("late", "kept too", "error"),
        ("early", "kept after reconfiguring", "info"),
    ]
    assert lines[0]["n"] == 1
