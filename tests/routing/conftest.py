from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.config.load import parse_text
from gateway.config.schema import Config

# The reference guide's worked example: a VMR, a Virtual Reception, and rules 40/50/60.
GUIDE = r"""
[global]
mssip_domain = "example.com"

[[locations]]
name = "London"

[[lync_servers]]
name = "eu-lyncpool"
address = "lyncpool.example.com"

[[services]]
type = "vmr"
name = "Alice's meeting room"
aliases = ["meet.alice@example.com", "alice.vmr"]
pin = "1234"
target = "sip:mcu-room-17@mcu.example.com"

[[services]]
type = "virtual_reception"
name = "SfB lobby"
aliases = ["sfb.lobby@example.com"]
lync_server = "eu-lyncpool"
lookup_location = "London"

[[routing_rules]]
name = "Route calls from Lync / Skype for Business"
priority = 40
protocols = ["mssip"]
match = '.*@example\.com'
target = "registered_or_external"

[[routing_rules]]
name = "Lync meeting direct"
priority = 50
protocols = ["sip", "h323", "webrtc"]
match = '88(\d{5,7})@example\.com'
replace = '\1'
target = "lync_meeting_direct"
outgoing_protocol = "mssip"
call_via = "eu-lyncpool"

[[routing_rules]]
name = "Route to Lync / Skype for Business clients"
priority = 60
protocols = ["sip", "h323", "webrtc"]
match_full_uri = true
match = '.*@example\.com.*'
target = "lync_via_virtual_reception"
outgoing_protocol = "mssip"
call_via = "eu-lyncpool"
"""


@pytest.fixture
def config_from() -> Callable[[str], Config]:
    def build(text: str) -> Config:
        return parse_text(text, "test.toml", base_dir=Path("."))

    return build
