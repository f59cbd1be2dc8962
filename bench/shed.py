"""What one refused call costs the node while it sheds: SIPp's INVITE (bench/call_core.py's,
with SDP) answered 503, and then its ACK, through the endpoint alone (no socket, one core),
on the glance path (raw bytes) and on the parsed path (the same requests with a folded
Max-Forwards, which the glance leaves to the parser).

    .venv/bin/python bench/shed.py [--calls 20000]
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

# bench/routing.py would shadow the `routing` package: the project comes first.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from call_core import UAC, caller_invite

from gateway.sip.endpoint import Endpoint, EndpointSettings

TAG = re.compile(rb"\r\nTo:[^\r]*;tag=([^;\r]+)")


def ack(invite: bytes, tag: bytes) -> bytes:
    head = invite.split(b"\r\nContact:")[0].replace(b"INVITE sip:", b"ACK sip:", 1)
    head = head.replace(b"CSeq: 1 INVITE", b"CSeq: 1 ACK")
    head = re.sub(rb"(\r\nTo:[^\r]*)", rb"\1;tag=" + tag, head, count=1)
    return head + b"\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"


def run(invites: list[bytes]) -> tuple[float, float]:
    """(us per refused INVITE, us per ACK of a refusal)."""
    endpoint = Endpoint(EndpointSettings(server="bench"))
    endpoint.overload.share = 0.0  # refuse every new dialog
    tags = []
    start = time.process_time()
    for invite in invites:
        sent = endpoint.receive(invite, UAC, None, 1.0)
        tags.append(TAG.search(sent[0].data).group(1))  # type: ignore[union-attr]
    refused = time.process_time() - start
    acks = [ack(i, t) for i, t in zip(invites, tags, strict=True)]
    start = time.process_time()
    for message in acks:
        endpoint.receive(message, UAC, None, 1.0)
    absorbed = time.process_time() - start
    return refused / len(invites) * 1e6, absorbed / len(acks) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000)
    args = parser.parse_args()
    invites = [caller_invite(n) for n in range(args.calls)]
    folded = [i.replace(b"Max-Forwards: 70", b"Max-Forwards:\r\n 70") for i in invites]
    print(f"{args.calls} refused calls through the endpoint, us of CPU each")
    print(f"{'path':<8} {'INVITE':>8} {'ACK':>8} {'call':>8}")
    for name, batch in (("glance", invites), ("parsed", folded)):
        invite_us, ack_us = run(batch)
        print(f"{name:<8} {invite_us:8.1f} {ack_us:8.1f} {invite_us + ack_us:8.1f}")


if __name__ == "__main__":
    main()
