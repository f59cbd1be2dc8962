"""Dialogs (RFC 3261 section 12): creation on both sides, early to confirmed, route sets
(loose and strict), remote target refresh, CSeq rules, and in-dialog request building."""

from __future__ import annotations

import pytest

from gateway.sip.dialog import Dialog, DialogState
from gateway.sip.errors import SipRequestError
from gateway.sip.message import Request, Response, make_response
from gateway.sip.parse import parse_message

VIA = "SIP/2.0/TLS gw.example.com:5061"


def parsed_request(data: bytes) -> Request:
    message = parse_message(data)
    assert isinstance(message, Request)
    return message


def our_invite() -> Request:
    return parsed_request(
        b"INVITE sip:bob@example.com SIP/2.0\r\n"
        b"Via: SIP/2.0/TLS gw.example.com:5061;branch=z9hG4bK-d1\r\n"
        b"From: \"Gateway\" <sip:room@vc.example.com>;tag=ours\r\n"
        b"To: <sip:bob@example.com>\r\nCall-ID: dlg-1\r\nCSeq: 7 INVITE\r\n"
        b"Contact: <sip:gw.example.com:5061;transport=tls>\r\nMax-Forwards: 70\r\n"
        b"Content-Length: 0\r\n\r\n"
    )


def reply(invite: Request, status: int, contact: str, *record_routes: str) -> Response:
    headers = [("Contact", contact), *(("Record-Route", rr) for rr in record_routes)]
    response = make_response(invite, status, to_tag="theirs", headers=headers)
    parsed = parse_message(response.to_bytes())
    assert isinstance(parsed, Response)
    return parsed


def test_uac_early_dialog_from_180_is_confirmed_by_the_200() -> None:
    invite = our_invite()
    ringing = reply(invite, 180, "<sip:bob@10.0.0.9;transport=tls>",
                    "<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>")
    dialog = Dialog.from_response(invite, ringing)
    assert dialog.state is DialogState.EARLY and dialog.is_uac
    assert dialog.route_set == ("<sip:p2.example.com;lr>", "<sip:p1.example.com;lr>")
    ok = reply(invite, 200, "<sip:bob@10.0.0.10;transport=tls>", "<sip:p3.example.com;lr>")
    dialog.on_response(invite, ok)
    assert dialog.state is DialogState.CONFIRMED
    assert dialog.remote_target == "sip:bob@10.0.0.10;transport=tls"
    assert dialog.route_set == ("<sip:p3.example.com;lr>",)  # the 2xx's route set wins


def test_only_tagged_provisional_or_2xx_create_a_dialog() -> None:
    invite = our_invite()
    trying = make_response(invite, 100)
    with pytest.raises(ValueError):
        Dialog.from_response(invite, trying)


def test_ack_repeats_the_invite_cseq_and_bye_takes_the_next() -> None:
    invite = our_invite()
    dialog = Dialog.from_response(invite, reply(invite, 200, "<sip:bob@10.0.0.9>"))
    ack = dialog.ack(VIA)
    assert ack.cseq.seq == 7 and ack.cseq.method == "ACK"
    bye = dialog.create_request("BYE", VIA)
    assert (bye.cseq.seq, bye.uri_text) == (8, "sip:bob@10.0.0.9")
    assert bye.from_.tag == "ours" and bye.to.tag == "theirs"
    assert bye.top_via.branch != ack.top_via.branch
    assert bye.top_via.branch and bye.top_via.branch.startswith("z9hG4bK")


def test_uas_dialog_from_lync_invite_routes_bye_through_ms_route_sig(
    lync_invite: bytes,
) -> None:
    invite = parsed_request(lync_invite)
    dialog = Dialog.from_request(invite, "gwtag", confirmed=True)
    assert not dialog.is_uac and dialog.remote_cseq == 1
    assert "ms-route-sig=" in dialog.route_set[0]
    bye = parse_message(dialog.create_request("BYE", VIA).to_bytes())
    assert isinstance(bye, Request)
    # loose routing: Request-URI is the GRUU Contact, the Record-Route becomes the Route
    assert bye.uri_text.startswith("sip:bob@example.com;opaque=user:epid:")
    assert bye.headers.get_all("Route") == list(dialog.route_set)
    assert bye.from_.tag == "gwtag" and bye.to.tag == "a1b2c3d4e5"
    assert bye.from_.uri == invite.to.uri and bye.cseq.seq == 1


def test_strict_route_takes_the_request_uri_and_target_goes_last() -> None:
    invite = our_invite()
    dialog = Dialog.from_response(
        invite, reply(invite, 200, "<sip:bob@10.0.0.9>", "<sip:strict.example.com>")
    )
    bye = dialog.create_request("BYE", VIA)
    assert bye.uri_text == "sip:strict.example.com"
    assert bye.headers.get_all("Route") == ["<sip:bob@10.0.0.9>"]
    assert dialog.next_hop == "sip:strict.example.com"


def test_peer_requests_out_of_order_cseq_gets_500_and_reinvite_refreshes_target(
    lync_invite: bytes,
) -> None:
    invite = parsed_request(lync_invite)
    dialog = Dialog.from_request(invite, "gwtag", confirmed=True)
    reinvite = parsed_request(
        lync_invite.replace(b"CSeq: 1 INVITE", b"CSeq: 3 INVITE").replace(
            b"Contact: <sip:bob@example.com;opaque=user:epid:xNHBS2dFEFGJxxQm4uRBhQAA;gruu>",
            b"Contact: <sip:bob@10.0.1.99;transport=tls>")
    )
    dialog.on_request(reinvite)
    assert dialog.remote_cseq == 3 and dialog.remote_target == "sip:bob@10.0.1.99;transport=tls"
    stale = parsed_request(lync_invite.replace(b"CSeq: 1 INVITE", b"CSeq: 2 INVITE"))
    with pytest.raises(SipRequestError) as refused:
        dialog.on_request(stale)
    assert refused.value.status_hint == 500


def test_matching_needs_call_id_and_both_tags(lync_invite: bytes) -> None:
    invite = parsed_request(lync_invite)
    dialog = Dialog.from_request(invite, "gwtag", confirmed=True)
    bye_from_peer = parsed_request(
        lync_invite.replace(b"To: <sip:meet.alice@vc.example.com>",
                            b"To: <sip:meet.alice@vc.example.com>;tag=gwtag")
    )
    assert dialog.matches(bye_from_peer)
    other = parsed_request(lync_invite.replace(b"tag=a1b2c3d4e5", b"tag=zzz"))
    assert not dialog.matches(other)


def test_481_to_an_in_dialog_request_ends_the_dialog() -> None:
    invite = our_invite()
    dialog = Dialog.from_response(invite, reply(invite, 200, "<sip:bob@10.0.0.9>"))
    info = dialog.create_request("INFO", VIA)
    dialog.on_response(info, make_response(info, 481))
    assert dialog.state is DialogState.TERMINATED


def test_rejected_invite_ends_an_early_dialog() -> None:
    invite = our_invite()
    dialog = Dialog.from_response(invite, reply(invite, 183, "<sip:bob@10.0.0.9>"))
    dialog.on_response(invite, reply(invite, 486, "<sip:bob@10.0.0.9>"))
    assert dialog.state is DialogState.TERMINATED
