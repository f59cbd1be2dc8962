"""Parser micro-benchmark: messages per second for a Lync-sized INVITE (the multipart
SfB offer in tests/sip/fixtures, ~3 KB) and a small OPTIONS, parsed and then read through the
typed headers a call setup touches (Via, From/To, Call-ID, CSeq, Contact, Record-Route).

    .venv/bin/python bench/parser.py [--seconds 3]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from gateway.sip.parse import parse_message

ROOT = Path(__file__).resolve().parent.parent
LYNC_INVITE = (ROOT / "tests" / "sip" / "fixtures" / "lync_invite.txt").read_bytes()
OPTIONS = (
    b"OPTIONS sip:gw@127.0.0.1:5060 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK-1;rport\r\n"
    b"From: <sip:probe@127.0.0.1>;tag=p\r\nTo: <sip:gw@127.0.0.1>\r\nCall-ID: c-1\r\n"
    b"CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
)


def parse_and_read(data: bytes) -> None:
    message = parse_message(data)
    message.vias  # noqa: B018 - the typed reads are what is measured
    message.from_  # noqa: B018
    message.to  # noqa: B018
    message.call_id  # noqa: B018
    message.cseq  # noqa: B018
    message.contacts  # noqa: B018
    message.record_routes  # noqa: B018


def rate(data: bytes, seconds: float, work: str) -> float:
    fn = parse_message if work == "parse" else parse_and_read
    # Distinct buffers, so no cache keyed on the bytes flatters the figure.
    variants = [data.replace(b"Call-ID: ", b"Call-ID: %06d" % i, 1) for i in range(1000)]
    count = 0
    started = time.process_time()
    while time.process_time() - started < seconds:
        for item in variants:
            fn(item)
        count += len(variants)
    return count / (time.process_time() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    for name, data in (("Lync INVITE", LYNC_INVITE), ("OPTIONS", OPTIONS)):
        for work in ("parse", "parse + typed headers"):
            per_second = rate(data, args.seconds, work)
            print(f"{name:12} ({len(data):5d} bytes) {work:22} {per_second:10,.0f} msg/CPU-s "
                  f"({1e6 / per_second:.1f} us each)")


if __name__ == "__main__":
    main()
