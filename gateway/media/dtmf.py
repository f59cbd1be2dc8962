"""Digits a caller keys: RFC 4733 telephone-events in its RTP stream, and the SIP INFO
bodies phones send instead (`application/dtmf-relay`, `application/dtmf`)."""

from __future__ import annotations

from collections import deque

# RFC 4733 3.2: events 0-15 are the DTMF keys; the codes after them (flash, modem and fax
# tones) are no digit a caller can enter.
DIGITS = "0123456789*#ABCD"
# Ended events remembered to count each once: its three end packets may arrive interleaved
# with the next event's first packets when the network reorders, never many events later.
REMEMBERED = 16


class DtmfReceiver:
    """Feed it the caller's RTP (already unprotected); it says which key was pressed, once
    per event, when the event's end first arrives. Counting at the end rather than the start
    is RFC 4733 2.5.1.4's advice when a start may have been lost, and what makes an event
    whose end never comes (the stream stopped) no digit at all."""

    def __init__(self, payload_types: frozenset[int]) -> None:
        self.payload_types = payload_types
        self.dropped = 0  # telephone-event packets no sender should have sent
        self._ended: deque[tuple[int, int]] = deque(maxlen=REMEMBERED)

    def rtp(self, packet: bytes) -> str | None:
        if len(packet) < 12 or packet[0] >> 6 != 2:
            # Not RTP whatever its payload type: the relay counts these for the stream,
            # and here they are counted as what the receiver could not read.
            self.dropped += 1
            return None
        if packet[1] & 0x7F not in self.payload_types:
            return None  # the caller's audio: none of ours
        start = 12 + 4 * (packet[0] & 0x0F)
        end = len(packet)
        if packet[0] & 0x20:  # padding: its length is the last octet (RFC 3550 5.1)
            end -= packet[-1]
        if packet[0] & 0x10 and end >= start + 4:
            start += 4 + 4 * ((packet[start + 2] << 8) | packet[start + 3])
        if end - start < 4 or packet[start] >= len(DIGITS):
            self.dropped += 1
            return None
        if not packet[start + 1] & 0x80:
            return None  # the event goes on; its end says it
        # One event is one RTP timestamp (RFC 4733 2.5.1.2): its redundant end packets and a
        # retransmission of the whole event share it. The SSRC keeps a new stream's events
        # (after a re-INVITE, say) apart from an old one's that happen to share a timestamp.
        key = (int.from_bytes(packet[8:12], "big"), int.from_bytes(packet[4:8], "big"))
        if key in self._ended:
            return None
        self._ended.append(key)
        return DIGITS[packet[start]]


def info_digit(content_type: str, body: bytes) -> str | None:
    """The key a SIP INFO carries, or None. `application/dtmf-relay` is Cisco's
    `Signal=5` / `Duration=160` lines; `application/dtmf` a bare key. Both are also sent
    with the RFC 4733 event number instead of the character (10 for `*`, 11 for `#`, as
    Asterisk reads them), so numbers 10-15 are taken as those keys."""
    kind = content_type.split(";", 1)[0].strip().lower()
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        return None
    if kind == "application/dtmf-relay":
        for line in text.splitlines():
            name, equals, value = line.partition("=")
            if equals and name.strip().lower() == "signal":
                return _key(value)
        return None
    if kind == "application/dtmf":
        return _key(text)
    return None


def _key(value: str) -> str | None:
    value = value.strip().upper()
    if len(value) == 1 and value in DIGITS:
        return value
    if value.isascii() and value.isdigit() and len(value) <= 2 and int(value) < len(DIGITS):
        return DIGITS[int(value)]
    return None
