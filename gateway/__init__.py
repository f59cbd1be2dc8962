"""lyncgate: a SIP / MS-SIP gateway between Lync / Skype for Business and standard SIP."""

from __future__ import annotations

__version__ = "0.1.0"
