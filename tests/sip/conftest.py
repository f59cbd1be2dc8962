from __future__ import annotations

from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def lync_invite() -> bytes:
    return (FIXTURES / "lync_invite.txt").read_bytes()


@pytest.fixture
def polycom_invite() -> bytes:
    return (FIXTURES / "polycom_invite.txt").read_bytes()
