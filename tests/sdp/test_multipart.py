"""multipart bodies: Lync's two-part offer split, parts rebuilt, and malformed bodies refused
with a reason."""

from __future__ import annotations

import pytest

from sdp.errors import SdpError
from sdp.multipart import Part, join, pick_sdp, split
from tests.sdp.conftest import LYNC_BOUNDARY, fixture


def test_lync_offer_has_two_sdp_parts_with_their_headers() -> None:
    parts = split(fixture("lync2013_multipart.txt"), LYNC_BOUNDARY)
    assert [p.content_type for p in parts] == ["application/sdp", "application/sdp"]
    assert parts[0].header("content-disposition") == (
        "session; handling=optional; ms-proxy-2007fallback")
    assert parts[1].body.startswith(b"v=0\r\n") and parts[1].body.endswith(b"a=rtpmap:123 "
                                                                            b"x-ulpfecuc/90000\r\n")


def test_join_then_split_gives_the_parts_back() -> None:
    parts = [Part((("Content-Type", "application/sdp"),), b"v=0\r\no=x\r\n"),
             Part((("Content-Type", "application/sdp"),
                   ("Content-Disposition", "session; handling=optional")), b"v=0\r\n")]
    body, boundary = join(parts)
    assert split(body, boundary) == parts


@pytest.mark.parametrize(("body", "words"), [
    (b"v=0\r\n", "no part delimited"),
    (b"--b\r\nContent-Type: application/sdp\r\n\r\nv=0\r\n--b\r\n", "not closed"),
    (b"--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b--\r\n", None),
])
def test_malformed_bodies(body: bytes, words: str | None) -> None:
    if words is None:
        with pytest.raises(SdpError, match="no application/sdp part"):
            pick_sdp(split(body, "b"))
        return
    with pytest.raises(SdpError, match=words):
        split(body, "b")
