from __future__ import annotations

from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures"
LYNC_BOUNDARY = "fBpPKSsLpkk7z9bwWz9IMqKUhHN9DKnl"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()
