"""RFC 6184 helpers: the picture size read from real x264 SPSs (cropped sizes, High profile's
chroma fields) agrees with ffprobe's; STAP-A and FU-A packetising for an MTU gives back the
same units through an independent depacketiser, and so does cutting FU-As again for a
smaller MTU; STAP-A payloads that do not add up raise H264Error only."""

from __future__ import annotations

import contextlib
import json
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.media.h264 import (
    FU_A,
    STAP_A,
    H264Error,
    fragment,
    packetize,
    parse_sps,
    split_fu_a,
    split_stap_a,
)
from tests.kit.video import encode, nal_units
from tests.peers import need


@pytest.mark.parametrize(("width", "height", "profile"), [
    (640, 360, "constrained-baseline"),  # 368 coded lines, 8 cropped
    (320, 180, "high"),  # chroma_format_idc and friends present
    (854, 480, "main"),  # a width cropped too
])
def test_sps_size_matches_ffprobe(tmp_path: Path, width: int, height: int,
                                  profile: str) -> None:
    packets = encode(tmp_path, frames=2, width=width, height=height, profile=profile)
    nals = [nal for _, nal in nal_units(packets)]
    sps = next(nal for nal in nals if nal[0] & 0x1F == 7)
    stream = tmp_path / "stream.h264"
    stream.write_bytes(b"".join(b"\x00\x00\x00\x01" + nal for nal in nals))
    probe = json.loads(subprocess.run(
        [need("ffprobe"), "-v", "error", "-f", "h264", "-show_streams", "-of", "json",
         str(stream)], check=True, capture_output=True).stdout)["streams"][0]
    parsed = parse_sps(sps)
    assert (parsed.width, parsed.height) == (probe["width"], probe["height"]) == (
        width, height)
    # ffprobe states no coded size without decoding; whole macroblocks around the picture
    assert (parsed.coded_width, parsed.coded_height) == (-(-width // 16) * 16,
                                                         -(-height // 16) * 16)


def units(payloads: list[bytes]) -> list[bytes]:
    """The NAL units an independent receiver takes out of `payloads`."""
    return [nal for _, nal in nal_units([bytes(12) + payload for payload in payloads])]


@given(st.lists(st.binary(min_size=1, max_size=3000).map(lambda b: bytes([0x41]) + b),
                min_size=1, max_size=12), st.integers(60, 1400))
def test_packetize_then_reassemble_gives_the_units_back(nals: list[bytes], mtu: int) -> None:
    payloads = packetize(nals, mtu)
    assert all(len(p) <= mtu for p in payloads)
    assert units(payloads) == nals
    kinds = {p[0] & 0x1F for p in payloads}
    assert (FU_A in kinds) == any(len(n) > mtu for n in nals)
    if len(nals) > 1 and sum(len(n) + 2 for n in nals) + 1 <= mtu:
        assert kinds == {STAP_A} and len(payloads) == 1


@given(st.binary(min_size=1, max_size=3000).map(lambda b: bytes([0x65]) + b),
       st.integers(60, 1400), st.integers(3, 1400))
def test_fu_as_cut_again_for_a_smaller_mtu_give_the_unit_back(nal: bytes, mtu: int,
                                                              smaller: int) -> None:
    pieces = [piece for payload in fragment(nal, mtu) for piece in split_fu_a(payload, smaller)]
    assert all(len(p) <= smaller for p in pieces)
    assert units(pieces) == [nal]
    assert sum(1 for p in pieces if p[1] & 0x80) == sum(1 for p in pieces if p[1] & 0x40) == 1


@given(st.binary(max_size=60))
def test_any_stap_a_bytes_raise_only_h264error(data: bytes) -> None:
    with contextlib.suppress(H264Error):
        split_stap_a(b"\x18" + data)


@given(st.binary(max_size=60))
def test_any_sps_bytes_raise_only_h264error(data: bytes) -> None:
    with contextlib.suppress(H264Error):
        parse_sps(b"\x67" + data)
