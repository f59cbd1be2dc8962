"""DTMF from RFC 4733 telephone-events and SIP INFO. The judge of the RTP side is SIPp's
own captures (Debian's sip-tester ships one per key, played by `play_pcap_audio`): each
capture's RTP must yield exactly the key it is named for, once."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.media.dtmf import DtmfReceiver, info_digit

SIPP = Path("/usr/share/sip-tester")
CAPTURES = {"0": "0", "1": "1", "2": "2", "3": "3", "4": "4", "5": "5", "6": "6", "7": "7",
            "8": "8", "9": "9", "star": "*", "pound": "#"}
TELEPHONE_EVENT = 101  # what SIPp's captures use


def udp_payloads(path: Path) -> list[bytes]:
    """The UDP payloads of a classic pcap file of Ethernet frames carrying IPv4, read with
    struct so that the test needs nothing the project does not."""
    data = path.read_bytes()
    magic = data[:4]
    order = {b"\xd4\xc3\xb2\xa1": "<", b"\xa1\xb2\xc3\xd4": ">"}[magic]
    linktype = struct.unpack(order + "I", data[20:24])[0]
    assert linktype == 1, "Ethernet captures expected"
    payloads = []
    offset = 24
    while offset + 16 <= len(data):
        included = struct.unpack(order + "I", data[offset + 8:offset + 12])[0]
        frame = data[offset + 16:offset + 16 + included]
        offset += 16 + included
        if frame[12:14] != b"\x08\x00" or frame[14 + 9] != 17:  # IPv4, UDP
            continue
        ip = frame[14:]
        header = (ip[0] & 0x0F) * 4
        udp_length = struct.unpack(">H", ip[header + 4:header + 6])[0]
        payloads.append(ip[header + 8:header + udp_length])
    return payloads


def capture(name: str) -> list[bytes]:
    path = SIPP / f"dtmf_2833_{name}.pcap"
    if not path.exists():
        pytest.fail(f"{path} is missing: sip-tester is not installed (scripts/install --test)")
    return udp_payloads(path)


def event(code: int, *, end: bool, ts: int = 1000, seq: int = 1, pt: int = TELEPHONE_EVENT,
          ssrc: int = 0x11223344, duration: int = 160) -> bytes:
    header = struct.pack(">BBHII", 0x80, pt, seq, ts, ssrc)
    return header + struct.pack(">BBH", code, (0x80 if end else 0) | 10, duration)


@pytest.mark.parametrize("name", sorted(CAPTURES))
def test_sipp_capture_yields_its_key_once(name: str) -> None:
    packets = capture(name)
    assert len(packets) >= 4  # start, continuation and the three end packets
    receiver = DtmfReceiver(frozenset({TELEPHONE_EVENT}))
    digits = [d for d in map(receiver.rtp, packets) if d is not None]
    assert digits == [CAPTURES[name]]
    assert receiver.dropped == 0
    # The key is reported on the first end packet, not before.
    first_end = next(i for i, p in enumerate(packets) if p[13] & 0x80)
    receiver = DtmfReceiver(frozenset({TELEPHONE_EVENT}))
    assert [receiver.rtp(p) for p in packets[:first_end]] == [None] * first_end
    assert receiver.rtp(packets[first_end]) == CAPTURES[name]


def test_sipp_captures_played_in_turn_give_every_key_in_order() -> None:
    """As a caller keys a PIN: one stream (the captures share SSRC 0x0e05384e), one event
    after another, each under its own timestamp."""
    receiver = DtmfReceiver(frozenset({TELEPHONE_EVENT}))
    order = ["1", "2", "star", "9", "pound", "0"]
    keyed = [d for name in order for d in map(receiver.rtp, capture(name)) if d is not None]
    assert keyed == [CAPTURES[n] for n in order]


def test_sipp_capture_retransmitted_counts_once() -> None:
    receiver = DtmfReceiver(frozenset({TELEPHONE_EVENT}))
    packets = capture("5")
    assert [d for d in map(receiver.rtp, packets + packets) if d] == ["5"]


def test_other_payload_types_are_not_read() -> None:
    receiver = DtmfReceiver(frozenset({96}))
    assert [receiver.rtp(p) for p in capture("7")] == [None] * len(capture("7"))
    assert receiver.dropped == 0


def test_event_that_never_ends_is_no_digit() -> None:
    receiver = DtmfReceiver(frozenset({TELEPHONE_EVENT}))
    without_end = [p for p in capture("3") if not p[13] & 0x80]
    assert without_end and [receiver.rtp(p) for p in without_end] == [None] * len(without_end)
    # The next event is its own digit; the unfinished one never becomes one.
    assert receiver.rtp(event(4, end=True, ts=99999)) == "4"


def test_same_key_twice_is_two_digits() -> None:
    receiver = DtmfReceiver(frozenset({TELEPHONE_EVENT}))
    keyed = []
    for ts in (8000, 9600):
        for seq in range(3):
            keyed.append(receiver.rtp(event(1, end=True, ts=ts, seq=ts + seq)))
    assert keyed == ["1", None, None, "1", None, None]


def test_reordered_end_packets_after_next_event_count_once() -> None:
    receiver = DtmfReceiver(frozenset({TELEPHONE_EVENT}))
    order = [event(2, end=True, ts=100), event(3, end=False, ts=900),
             event(2, end=True, ts=100), event(3, end=True, ts=900), event(2, end=True, ts=100)]
    assert [d for d in map(receiver.rtp, order) if d] == ["2", "3"]


def test_a_new_ssrc_with_an_old_timestamp_is_a_new_event() -> None:
    receiver = DtmfReceiver(frozenset({TELEPHONE_EVENT}))
    assert receiver.rtp(event(6, end=True, ssrc=1)) == "6"
    assert receiver.rtp(event(6, end=True, ssrc=2)) == "6"


@pytest.mark.parametrize("code, key", [(10, "*"), (11, "#"), (12, "A"), (15, "D")])
def test_keys_beyond_the_ten_digits(code: int, key: str) -> None:
    assert DtmfReceiver(frozenset({TELEPHONE_EVENT})).rtp(event(code, end=True)) == key


def test_header_extension_csrc_and_padding_are_skipped() -> None:
    receiver = DtmfReceiver(frozenset({TELEPHONE_EVENT}))
    payload = struct.pack(">BBH", 9, 0x8A, 800)
    csrc = struct.pack(">II", 1, 2)
    extension = struct.pack(">HH", 0xBEDE, 1) + b"\x10\xaa\x00\x00"
    padding = b"\x00\x00\x00\x04"
    first = bytes([0x80 | 0x20 | 0x10 | 2, TELEPHONE_EVENT]) + struct.pack(">HII", 1, 5, 6)
    assert receiver.rtp(first + csrc + extension + payload + padding) == "9"
    assert receiver.dropped == 0


@pytest.mark.parametrize("packet", [
    b"",
    b"\x80",
    bytes([0x80, TELEPHONE_EVENT]) + bytes(10),  # a header and nothing else
    bytes([0x80, TELEPHONE_EVENT]) + bytes(10) + b"\x05\x8a",  # half an event
    event(16, end=True),  # flash: no key
    event(200, end=True),
    bytes([0x40, TELEPHONE_EVENT]) + bytes(14),  # version 1
    bytes([0x8F, TELEPHONE_EVENT]) + bytes(14),  # 15 CSRCs announced, none there
    bytes([0x90, TELEPHONE_EVENT]) + bytes(10) + struct.pack(">HH", 0, 40) + b"\x05\x8a\0\0",
    bytes([0xA0, TELEPHONE_EVENT]) + bytes(10) + b"\x05\x8a\x00\xff",  # padding past start
])
def test_malformed_is_dropped_and_counted(packet: bytes) -> None:
    receiver = DtmfReceiver(frozenset({TELEPHONE_EVENT}))
    assert receiver.rtp(packet) is None
    assert receiver.dropped == 1


@settings(max_examples=500)
@given(st.lists(st.binary(max_size=40), max_size=20), st.integers(0, 127))
def test_any_bytes_never_raise(packets: list[bytes], pt: int) -> None:
    receiver = DtmfReceiver(frozenset({pt}))
    for packet in packets:
        digit = receiver.rtp(packet)
        assert digit is None or (len(digit) == 1 and digit in "0123456789*#ABCD")
        # With the payload type forced to the receiver's, the event parsing is what runs.
        if len(packet) >= 2:
            receiver.rtp(packet[:1] + bytes([pt | packet[1] & 0x80]) + packet[2:])


@pytest.mark.parametrize("content_type, body, key", [
    ("application/dtmf-relay", b"Signal=5\r\nDuration=160\r\n", "5"),
    ("application/dtmf-relay", b"Signal= #\r\nDuration= 250\r\n", "#"),
    ("application/dtmf-relay", b"Signal=*\nDuration=100\n", "*"),
    ("Application/DTMF-Relay; charset=x", b"signal=a\r\nduration=160\r\n", "A"),
    ("application/dtmf-relay", b"Duration=160\r\nSIGNAL = 0\r\n", "0"),
    ("application/dtmf-relay", b"Signal=11\r\nDuration=160\r\n", "#"),  # the event number
    ("application/dtmf", b"5", "5"),
    ("application/dtmf", b"#\r\n", "#"),
    ("application/dtmf", b"10", "*"),
    ("application/dtmf", b" d ", "D"),
])
def test_info_bodies(content_type: str, body: bytes, key: str) -> None:
    assert info_digit(content_type, body) == key


@pytest.mark.parametrize("content_type, body", [
    ("application/dtmf-relay", b"Duration=160\r\n"),
    ("application/dtmf-relay", b"Signal=\r\n"),
    ("application/dtmf-relay", b"Signal=16\r\n"),  # flash
    ("application/dtmf-relay", b"Signal=55\r\n"),
    ("application/dtmf-relay", b"Signal=E\r\n"),
    ("application/dtmf-relay", b"Signal=\xff\r\n"),
    ("application/dtmf", b""),
    ("application/dtmf", b"12345"),
    ("application/sdp", b"5"),
    ("text/plain", b"Signal=5\r\n"),
    ("", b"5"),
])
def test_info_bodies_without_a_key(content_type: str, body: bytes) -> None:
    assert info_digit(content_type, body) is None


@given(st.text(max_size=60), st.binary(max_size=200))
def test_info_any_input_never_raises(content_type: str, body: bytes) -> None:
    key = info_digit(content_type, body)
    assert key is None or (len(key) == 1 and key in "0123456789*#ABCD")
    for kind in ("application/dtmf-relay", "application/dtmf"):
        key = info_digit(kind, body)
        assert key is None or (len(key) == 1 and key in "0123456789*#ABCD")
