"""SUBSCRIBE/NOTIFY for presence through the real endpoint and B2BUA, on a clock the tests
set: who is Available, the forms Lync and standard clients use, the subscription's life
(refresh, unsubscribe, expiry, a subscriber that is gone, a reload), and bad input."""

from __future__ import annotations

from types import SimpleNamespace

from prometheus_client import CollectorRegistry

from gateway.api.metrics import NodeCollector, render
from gateway.presence.subscriptions import Limits
from gateway.sip.message import Request, Response
from gateway.sip.transaction_machines import Send
from gateway.transport.peer import Peer, Transport
from tests.kit.nodes import metric
from tests.kit.presence import (
    AVATARS,
    CONFIG,
    LYNC,
    PHONE,
    PresenceHarness,
    batch_body,
    lync_subscribe,
    notify_answer,
    requests,
    responses,
    subscribe,
)

ROOM = "sip:london-room003@vc.example.com"
BOARD = "sip:meet.board@vc.example.com"
TYPO = "sip:london-rooom003@vc.example.com"


def only_response(sent: list) -> Response:  # type: ignore[type-arg]
    answers = responses(sent)
    assert len(answers) == 1, answers
    return answers[0]


def test_a_standard_client_gets_200_then_a_pidf_notify_open_for_a_routed_alias() -> None:
    h = PresenceHarness()
    sent = h.feed(subscribe(ROOM, PHONE, accept="application/pidf+xml"), PHONE)
    ok = only_response(sent)
    assert ok.status == 200 and ok.headers.get("Expires") == "3600" and ok.to.tag
    assert not ok.body
    (notify,) = requests(sent)
    assert notify.headers.get("Event") == "presence"
    assert notify.headers.get("Subscription-State") == "active;expires=3600"
    assert notify.headers.get("Content-Type") == "application/pidf+xml"
    assert b"<basic>open</basic>" in notify.body and b"rooms: Video rooms by city" in notify.body
    assert notify.from_.tag == ok.to.tag and notify.to.tag == "from-" + ok.call_id
    assert notify.uri_text == "sip:alice@192.0.2.30:5062;transport=udp"
    assert len(h.presence.table) == 1


def test_lync_gets_the_categories_document_in_the_200_and_no_notify() -> None:
    h = PresenceHarness()
    sent = h.feed(lync_subscribe(BOARD), LYNC)
    ok = only_response(sent)
    assert not requests(sent)
    assert ok.headers.get("Content-Type") == "application/msrtc-event-categories+xml"
    assert ok.headers.get("Subscription-State") == "active;expires=3600"
    assert ok.headers.get("ms-piggyback-cseq") == "1"
    body = ok.body.decode()
    assert "<availability>3500</availability>" in body
    assert "<displayName>Board room</displayName>" in body
    assert "<description>The fourth-floor board room</description>" in body
    assert f"<uri>{AVATARS}/avatars/service/Board%20room</uri>" in body


def test_an_alias_nothing_routes_is_offline_so_a_typo_stands_out() -> None:
    h = PresenceHarness()
    ok = only_response(h.feed(lync_subscribe(TYPO), LYNC))
    body = ok.body.decode()
    assert "<availability>18500</availability>" in body and "contactCard" not in body
    notify = requests(h.feed(subscribe(TYPO, PHONE), PHONE))[0]
    assert b"<basic>closed</basic>" in notify.body


def test_lync_batch_subscription_gets_one_multipart_document_per_contact() -> None:
    h = PresenceHarness()
    body = batch_body([ROOM, TYPO, BOARD, ROOM])
    sent = h.feed(lync_subscribe("sip:alice@example.com", body=body,
                                 content_type="application/msrtc-adrl-categorylist+xml",
                                 require="adhoclist, categoryList"), LYNC)
    ok = only_response(sent)
    assert ok.status == 200, ok.reason
    content_type = ok.headers.get("Content-Type") or ""
    assert content_type.startswith("multipart/related;type=\"application/rlmi+xml\"")
    assert ok.headers.get("Require") == "eventlist"
    text = ok.body.decode()
    assert text.count("Content-Type: application/msrtc-event-categories+xml") == 3
    assert text.count("<resource uri=") == 3  # the repeated contact once
    assert text.count("<availability>3500</availability>") == 2
    assert text.count("<availability>18500</availability>") == 1


def test_refresh_renews_and_unsubscribe_ends_with_a_terminated_notify() -> None:
    h = PresenceHarness()
    first = h.feed(subscribe(ROOM, PHONE, call_id="c1"), PHONE)
    tag = only_response(first).to.tag or ""
    h.feed(notify_answer(requests(first)[0], 200), PHONE)
    h.now = 3000.0
    again = h.feed(subscribe(ROOM, PHONE, call_id="c1", cseq=2, to_tag=tag), PHONE)
    assert only_response(again).headers.get("Expires") == "3600"
    (notify,) = requests(again)
    assert notify.headers.get("Subscription-State") == "active;expires=3600"
    assert notify.cseq.seq == 2
    h.feed(notify_answer(notify, 200), PHONE)
    assert h.tick(3700.0) == []  # refreshed: not expired at the first expiry
    bye = h.feed(subscribe(ROOM, PHONE, call_id="c1", cseq=3, to_tag=tag, expires=0), PHONE)
    assert only_response(bye).headers.get("Expires") == "0"
    (final,) = requests(bye)
    assert final.headers.get("Subscription-State") == "terminated;reason=timeout"
    assert len(h.presence.table) == 0 and h.presence.next_deadline() is None


def test_an_unrefreshed_subscription_expires_with_a_final_notify_and_leaves_nothing() -> None:
    h = PresenceHarness()
    h.feed(lync_subscribe(BOARD, expires=600), LYNC)
    assert h.presence.next_deadline() == 600.0
    assert h.tick(599.0) == []
    (final,) = requests(h.tick(600.0))
    assert final.headers.get("Subscription-State") == "terminated;reason=timeout"
    assert b"<availability>3500</availability>" in final.body
    assert len(h.presence.table) == 0 and h.presence.table.sources() == {}


def test_a_notify_answered_481_or_never_answered_drops_the_subscription() -> None:
    h = PresenceHarness()
    notify = requests(h.feed(subscribe(ROOM, PHONE), PHONE))[0]
    h.feed(notify_answer(notify, 481), PHONE)
    assert len(h.presence.table) == 0
    requests(h.feed(subscribe(ROOM, PHONE), PHONE))
    assert len(h.presence.table) == 1
    # No answer: the NOTIFY is retransmitted (Timer E) until Timer F, then dropped.
    retransmitted = h.tick(0.5)
    assert len(requests(retransmitted)) == 1
    for t in range(1, 33):
        h.tick(float(t))
    assert len(h.presence.table) == 0
    assert h.presence.counters["dropped"] == 2


def test_a_reload_that_removes_the_rule_notifies_offline_and_one_that_does_not_stays_quiet(
) -> None:
    h = PresenceHarness()
    h.feed(lync_subscribe(ROOM), LYNC)
    h.feed(lync_subscribe(BOARD), LYNC)
    assert h.reload(CONFIG + "\n# a comment changes nothing anyone sees\n") == []
    without_rule = CONFIG.split("[[routing_rules]]")[0]
    sent = h.reload(without_rule)
    (notify,) = requests(sent)
    assert notify.to.uri is not None
    assert b"<availability>18500</availability>" in notify.body
    assert (notify.headers.get("Subscription-State") or "").startswith("active;expires=")
    assert notify.cseq.seq == 2  # the 200 stood for NOTIFY 1 (ms-piggyback-cseq)


def test_other_event_packages_get_489_with_allow_events() -> None:
    h = PresenceHarness()
    for event in ("dialog", "presence.winfo", ""):
        ok = only_response(h.feed(subscribe(ROOM, PHONE, event=event), PHONE))
        assert ok.status == 489 and ok.headers.get("Allow-Events") == "presence"
    assert len(h.presence.table) == 0


def test_bad_bodies_are_refused_with_the_reason() -> None:
    h = PresenceHarness()
    cases = {
        b"<batchSub><adhocList><resource uri='sip:a@b'/>": "malformed XML body",
        b'<!DOCTYPE x [<!ENTITY a "aaaa">]><batchSub/>': "XML body with a DTD",
        batch_body([ROOM], tuple(f"c{i}" for i in range(65))): "more than 64 categories",
        batch_body([f"sip:r{i}@vc.example.com" for i in range(1001)]): "more than 1000",
        b"<other/>": "unexpected XML root",
        batch_body([]): "lists no resource",
    }
    for body, why in cases.items():
        ok = only_response(h.feed(lync_subscribe(
            "sip:alice@example.com", body=body,
            content_type="application/msrtc-adrl-categorylist+xml"), LYNC))
        assert ok.status == 400 and why in ok.reason, (ok.status, ok.reason)
    ok = only_response(h.feed(lync_subscribe(ROOM, body=b"x", content_type="text/plain"), LYNC))
    assert ok.status == 415
    assert len(h.presence.table) == 0


def test_expires_accept_and_dialog_errors() -> None:
    h = PresenceHarness()
    ok = only_response(h.feed(subscribe(ROOM, PHONE, expires=10), PHONE))
    assert ok.status == 423 and ok.headers.get("Min-Expires") == "60"
    ok = only_response(h.feed(subscribe(ROOM, PHONE, accept="application/xpidf+xml"), PHONE))
    assert ok.status == 406
    ok = only_response(h.feed(subscribe(ROOM, PHONE, to_tag="nosuch"), PHONE))
    assert ok.status == 481
    long = only_response(h.feed(subscribe(ROOM, PHONE, expires=86400), PHONE))
    assert long.headers.get("Expires") == "3600"
    fetched = h.feed(subscribe(ROOM, PHONE, expires=0), PHONE)  # a fetch: one NOTIFY, no state
    assert requests(fetched)[0].headers.get("Subscription-State") == "terminated;reason=timeout"
    assert len(h.presence.table) == 1


def test_a_flood_from_one_source_gets_503_and_others_are_still_served() -> None:
    h = PresenceHarness(Limits(max_total=5, max_per_source=3, retry_after=20))
    for _ in range(3):
        assert only_response(h.feed(lync_subscribe(ROOM), LYNC)).status == 200
    refused = only_response(h.feed(lync_subscribe(ROOM), LYNC))
    assert refused.status == 503 and refused.headers.get("Retry-After") == "20"
    other = Peer(Transport.TLS, "192.0.2.21", 5061, connection=8)
    for _ in range(2):
        assert only_response(h.feed(subscribe(BOARD, other), other)).status == 200
    full = only_response(h.feed(subscribe(BOARD, PHONE), PHONE))
    assert full.status == 503 and "5 subscriptions held" in full.reason
    assert len(h.presence.table) == 5


def test_subscribe_is_allowed_and_lync_option_tags_are_not_refused_420() -> None:
    h = PresenceHarness()
    assert "SUBSCRIBE" in h.ep.allow
    ok = only_response(h.feed(lync_subscribe(ROOM, require="adhoclist, categoryList"), LYNC))
    assert ok.status == 200


def test_metrics_show_subscriptions_held_and_what_happened() -> None:
    h = PresenceHarness(Limits(max_total=1))
    h.feed(lync_subscribe(BOARD), LYNC)
    h.feed(lync_subscribe(BOARD), LYNC)
    h.feed(subscribe(ROOM, PHONE, event="dialog"), PHONE)
    node = SimpleNamespace(endpoint=h.ep, calls=h.b2bua, generation=1, transport=SimpleNamespace(
        stats=SimpleNamespace(tls_handshakes=0, tls_failures={}), connection_count=0))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(node))  # type: ignore[arg-type]
    text = render(registry).decode()
    assert metric(text, "lyncgate_presence_subscriptions") == 1
    for event in ("subscribed", "refused_full", "bad_event"):
        assert metric(text, "lyncgate_presence_events_total", event=event) == 1


def test_a_refresh_on_a_new_connection_moves_the_notifies_there() -> None:
    h = PresenceHarness()
    tag = only_response(h.feed(lync_subscribe(BOARD, call_id="moved"), LYNC)).to.tag or ""
    again = Peer(Transport.TLS, LYNC.host, 5061, connection=99)
    h.feed(lync_subscribe(BOARD, call_id="moved", cseq=2, to_tag=tag, expires=600), again)
    (final,) = [(m, p) for m, p in h.tick(600.0)]
    assert final[1] == again and final[0].headers.get("Subscription-State") == (
        "terminated;reason=timeout")


def test_a_drain_ends_every_subscription_and_tells_those_on_a_connection() -> None:
    h = PresenceHarness()
    h.feed(lync_subscribe(BOARD), LYNC)
    h.feed(subscribe(ROOM, PHONE), PHONE)
    h.take()
    h.out += [e for e in h.presence.deactivate(5.0, h.ep)
              if isinstance(e, Send)]  # as Node.drain does before it stops listening
    (final,) = h.take()
    assert final[1] == LYNC and isinstance(final[0], Request)
    assert final[0].headers.get("Subscription-State") == "terminated;reason=deactivated"
    assert len(h.presence.table) == 0 and h.presence.next_deadline() is None


def test_an_event_id_is_repeated_in_the_notifies() -> None:
    h = PresenceHarness()
    sent = h.feed(subscribe(ROOM, PHONE, event="Presence;id=42"), PHONE)
    assert only_response(sent).headers.get("Event") == "presence;id=42"
    assert requests(sent)[0].headers.get("Event") == "presence;id=42"


def test_a_notify_refused_for_now_is_retried_then_the_subscriber_given_up() -> None:
    h = PresenceHarness()
    notify = requests(h.feed(subscribe(ROOM, PHONE), PHONE))[0]
    h.feed(notify_answer(notify, 503), PHONE)
    assert h.presence.next_deadline() == 2.0
    again = requests(h.tick(2.0))
    assert len(again) == 1 and again[0].cseq.seq == notify.cseq.seq + 1
    h.feed(notify_answer(again[0], 200), PHONE)  # taken this time: no more retries
    assert h.tick(10.0) == [] and len(h.presence.table) == 1
    # A change to tell, refused every time: sent, then retried at +2, +4 and +8 s.
    (pending,) = requests(h.reload(CONFIG.split("[[routing_rules]]")[0]))
    for at in (12.0, 16.0, 24.0, None):
        h.feed(notify_answer(pending, 500), PHONE)
        if at is not None:
            assert h.presence.next_deadline() == at
            (pending,) = requests(h.tick(at))
    assert len(h.presence.table) == 0 and h.presence.counters["dropped"] == 1
    assert h.presence.next_deadline() is None or h.tick(60.0) == []


def test_a_refresh_with_a_new_contact_retargets_the_notifies() -> None:
    h = PresenceHarness()
    tag = only_response(h.feed(subscribe(ROOM, PHONE, call_id="rt"), PHONE)).to.tag or ""
    moved = subscribe(ROOM, PHONE, call_id="rt", cseq=2, to_tag=tag).replace(
        b"Contact: <sip:alice@192.0.2.30:5062;transport=udp>",
        b"Contact: <sip:alice@192.0.2.31:5070>")
    (notify,) = requests(h.feed(moved, PHONE))
    assert notify.uri_text == "sip:alice@192.0.2.31:5070"


def test_a_subscribe_that_cannot_set_up_a_dialog_is_refused_400() -> None:
    h = PresenceHarness()
    no_contact = b"".join(line for line in subscribe(ROOM, PHONE).splitlines(keepends=True)
                          if not line.startswith(b"Contact:"))
    ok = only_response(h.feed(no_contact, PHONE))
    assert ok.status == 400 and "Contact" in ok.reason
    bad_route = subscribe(ROOM, PHONE).replace(b"Event:", b"Record-Route: <<nope\r\nEvent:")
    assert only_response(h.feed(bad_route, PHONE)).status == 400
    assert len(h.presence.table) == 0
