"""SUBSCRIBE and NOTIFY for `Event: presence` through the SIP core (RFC 6665, RFC 3856,
[MS-SIP] 3.4.5.1, [MS-PRES] 3.7.5.5).

- A new SUBSCRIBE names one presentity (its Request-URI) or, from Lync, a batch in its body;
  it is answered 200 with the document in it where the subscriber supports
  `ms-piggyback-first-notify`, else 200 and a NOTIFY with it (RFC 6665 4.2.1).
- A SUBSCRIBE in the dialog refreshes (the document again), `Expires: 0` ends it with a
  final document (`Subscription-State: terminated`).
- A subscription nobody refreshed ends at its expiry with a final NOTIFY; a NOTIFY answered
  481, 408 or a failure that ends the usage (RFC 5057), or never answered, drops it: the
  subscriber is gone, and so is what it held.
- A reload (`configure`) sends a NOTIFY to each subscription whose answer changed; a
  drain (`deactivate`) ends them all, so that subscribers come back at once.

Other event packages are 489 Bad Event with Allow-Events; beyond the caps, 503 with
Retry-After; bad bodies, the 400 that names what is wrong.
"""

from __future__ import annotations

import datetime as dt
import heapq
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from gateway import logs
from gateway.presence import avatars, documents
from gateway.presence.answer import answer
from gateway.presence.bodies import BATCH_TYPES, CATEGORY_LIST, read_batch
from gateway.presence.subscriptions import Limits, Subscription, Subscriptions
from gateway.sip.dialog import Dialog, DialogState
from gateway.sip.errors import SipRequestError
from gateway.sip.headers import parse_name_addr
from gateway.sip.message import Request, make_response
from gateway.sip.transaction_layer import Event, RequestReceived
from gateway.sip.transaction_machines import ServerTransaction
from gateway.transport.peer import Transport
from routing.engine import Router

if TYPE_CHECKING:
    from gateway.sip.endpoint import Endpoint

log = logs.get(__name__)

# Option tags a Lync batched SUBSCRIBE requires ([MS-PRES] 2.2.2.4.1): the endpoint must
# not refuse them 420 once presence is served.
OPTION_TAGS = frozenset({"adhoclist", "categorylist", "eventlist"})
PIGGYBACK = "ms-piggyback-first-notify"
# NOTIFY answers after which the subscription is gone (RFC 6665 4.2.2; RFC 5057 4.1).
_ENDS_USAGE = frozenset({404, 405, 408, 410, 416, 480, 481, 482, 483, 484, 485, 489, 501,
                         604})
# NOTIFYs answered with a failure that does not end the subscription, tried again this many
# times (after 2, 4, 8 s) before the subscriber is taken to be gone.
_RETRIES = 3
# Documents kept per config generation, by (format, presentity): a Lync pool asks for the
# same few hundred contacts over and over.
_CACHE_SIZE = 20_000


class Addressing(Protocol):
    """How the node writes itself into SIP toward a peer (`gateway.calls.settings.Local`)."""

    def via(self, transport: Transport, peer_host: str) -> str: ...

    def contact(self, transport: Transport, peer_host: str) -> str: ...


@dataclass(frozen=True, slots=True)
class NotifySent:
    """The `tu_data` of our NOTIFY's client transaction: its answer comes back here."""

    key: tuple[str, str]
    final: bool


class Presence:
    """The presence notifier. `avatar_base` is the avatars' absolute URL prefix
    (`http://host:port`), "" when no avatar server runs."""

    methods = frozenset({"SUBSCRIBE"})

    def __init__(self, router: Router, local: Addressing, *, avatar_base: str = "",
                 generation: int = 1, limits: Limits | None = None,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.local = local
        self.table = Subscriptions(limits or Limits())
        self.wall_clock = wall_clock
        self.counters: dict[str, int] = {}
        self.router = router
        self.avatar_base = avatar_base
        self.generation = generation
        self._published = _timestamp(wall_clock())
        self._cache: dict[tuple[str, str], tuple[str, int]] = {}
        self.avatars = avatars.table(router)  # what gateway.api.avatars serves
        # NOTIFYs to send again: attempts so far by subscription, and when
        self._retries: dict[tuple[str, str], int] = {}
        self._retry_at: list[tuple[float, tuple[str, str]]] = []

    # -- configuration --------------------------------------------------------------------
    def configure(self, router: Router, avatar_base: str, generation: int, now: float,
                  core: Endpoint) -> list[Event]:
        """A new config: each subscription whose answer changed is told (NOTIFY)."""
        self.router, self.avatar_base, self.generation = router, avatar_base, generation
        self.avatars = avatars.table(router)
        self._published = _timestamp(self.wall_clock())
        self._cache.clear()
        out: list[Event] = []
        changed = 0
        for sub in self.table:
            rendered = self._render(sub)
            if rendered[2] != sub.signature:
                changed += 1
                out += self._notify(sub, rendered, now, core)
        if changed:
            log.info("presence_changed_on_reload", subscriptions=changed,
                     generation=generation)
        return out

    def deactivate(self, now: float, core: Endpoint) -> list[Event]:
        """The node is stopping: every subscription ends with a final NOTIFY saying
        `deactivated`, which tells the subscriber to subscribe again at once (RFC 6665
        4.1.3), here after a restart or at another node, rather than learn at its next
        refresh (481) that the subscription went with the process.

        Only subscribers on a connection (Lync pools, over TLS) are told: the drain waits
        for every transaction to finish, and a UDP subscriber that is gone leaves its NOTIFY
        unanswered for 32 s (Timer F), where a closed connection fails it at once."""
        out: list[Event] = []
        for sub in self.table:
            self.table.remove(sub.key)
            self._retries.pop(sub.key, None)
            if sub.peer.reliable:
                out += self._notify(sub, self._render(sub), now, core, reason="deactivated")
        if out:
            log.info("presence_deactivated", subscriptions=len(out))
        return out

    # -- SUBSCRIBE ---------------------------------------------------------------------
    def on_subscribe(self, event: RequestReceived, now: float, core: Endpoint) -> list[Event]:
        request, txn = event.request, event.transaction
        package = (request.headers.get("Event") or "").partition(";")[0].strip().lower()
        if package != "presence":
            self._count("bad_event")
            return self._refuse(request, txn, 489, "Bad Event", now, core,
                                (("Allow-Events", "presence"),))
        if request.to.tag is not None:
            return self._in_dialog(request, txn, now, core)
        return self._new(request, txn, now, core)

    def _new(self, request: Request, txn: ServerTransaction, now: float,
             core: Endpoint) -> list[Event]:
        limits = self.table.limits
        refused = self.table.refused(txn.peer.host)
        if refused is not None:
            self._count("refused_full")
            log.warning("presence_subscription_refused", call_id=request.call_id,
                        reason=refused)
            return self._refuse(request, txn, 503, f"Service Unavailable ({refused})", now,
                                core, (("Retry-After", str(limits.retry_after)),))
        content_type = request.content_type
        media = content_type.type if content_type is not None else ""
        list_uri = ""
        if request.body and media in BATCH_TYPES:
            batch = read_batch(request.body)
            resources, list_uri = batch.resources, request.uri_text
            categories_asked = media == CATEGORY_LIST
        elif request.body and media:
            raise SipRequestError(415, "Unsupported Media Type", (
                ("Accept", ", ".join(sorted(BATCH_TYPES))),))
        else:
            resources, categories_asked = (request.uri_text,), False
        accept = _accepted(request)
        fmt = documents.choose_format(accept, categories_asked)
        if fmt is None:
            return self._refuse(request, txn, 406, "Not Acceptable", now, core,
                                (("Accept", ", ".join(documents.FORMATS)),))
        expires = request.expires
        if expires is None:
            expires = limits.default_expires
        elif 0 < expires < limits.min_expires:
            return self._refuse(request, txn, 423, "Interval Too Brief", now, core,
                                (("Min-Expires", str(limits.min_expires)),))
        expires = min(expires, limits.max_expires)
        contacts = request.contacts
        if not contacts:
            raise SipRequestError(400, "Bad Request (Contact required to set up a dialog)")
        route_set = tuple(request.headers.get_all("Record-Route"))
        if route_set:
            # Read now, so that a route set our NOTIFYs could not follow refuses the
            # SUBSCRIBE (400), not the first NOTIFY.
            parse_name_addr(route_set[0], "Record-Route")
        tag = core.new_tag()
        sub = Subscription(
            call_id=request.call_id, local_tag=tag, remote_tag=request.from_.tag or "",
            local=f"{request.to.raw};tag={tag}", remote=request.from_.raw,
            remote_target=str(contacts[0].uri), route_set=route_set, local_cseq=0,
            remote_cseq=request.cseq.seq, peer=txn.peer, resources=resources,
            list_uri=list_uri, fmt=fmt, piggyback=PIGGYBACK in request.tokens("Supported"),
            expires_at=now + expires, event=_event(request))
        self._count("subscribed")
        if expires:
            self.table.add(sub)
        log.info("presence_subscribed", call_id=request.call_id, resources=len(resources),
                 format=fmt, expires=expires, piggyback=sub.piggyback)
        return self._answer(sub, request, txn, expires, now, core)

    def _in_dialog(self, request: Request, txn: ServerTransaction, now: float,
                   core: Endpoint) -> list[Event]:
        key = (request.call_id, request.to.tag or "")
        sub = self.table.get(key)
        if sub is None or request.from_.tag != sub.remote_tag:
            self._count("unknown_dialog")
            return core.respond(request, txn, make_response(
                request, 481, "Subscription Does Not Exist"), now)
        if request.cseq.seq <= sub.remote_cseq:
            return core.respond(request, txn, make_response(
                request, 500, "Server Internal Error (CSeq out of order)",
                headers=(("Retry-After", "1"),)), now)
        sub.remote_cseq = request.cseq.seq
        contacts = request.contacts
        if contacts:  # SUBSCRIBE refreshes the target (RFC 6665 4.1.1)
            sub.remote_target = str(contacts[0].uri)
        if txn.peer.host == sub.peer.host:
            # Lync reconnects (a pool failover, an idle timeout) and refreshes on the new
            # connection: NOTIFYs follow it there rather than fail on the closed one. Another
            # address would be another source, whose count this subscription is not in.
            sub.peer = txn.peer
        limits = self.table.limits
        expires = request.expires
        if expires is None:
            expires = limits.default_expires
        elif 0 < expires < limits.min_expires:
            return core.respond(request, txn, make_response(
                request, 423, "Interval Too Brief",
                headers=(("Min-Expires", str(limits.min_expires)),)), now)
        expires = min(expires, limits.max_expires)
        if expires:
            self._count("refreshed")
            self.table.refresh(sub, now + expires)
        else:
            self._count("unsubscribed")
            self.table.remove(sub.key)
            self._retries.pop(sub.key, None)
        log.info("presence_refreshed" if expires else "presence_unsubscribed",
                 call_id=request.call_id, expires=expires)
        return self._answer(sub, request, txn, expires, now, core)

    def _answer(self, sub: Subscription, request: Request, txn: ServerTransaction,
                expires: int, now: float, core: Endpoint) -> list[Event]:
        """200 to a SUBSCRIBE, with the document in it or followed by a NOTIFY."""
        peer = txn.peer
        headers: list[tuple[str, str]] = [
            ("Contact", self.local.contact(peer.transport, peer.host)),
            ("Expires", str(expires)), ("Event", sub.event)]
        rendered = self._render(sub)
        body, content_type, sub.signature = rendered
        if not sub.piggyback:
            out = core.respond(request, txn, make_response(
                request, 200, to_tag=sub.local_tag, headers=headers), now)
            return out + self._notify(sub, rendered, now, core)
        sub.local_cseq += 1  # the NOTIFY the 200 stands for takes a CSeq of ours
        headers += [("Subscription-State", _state(expires)),
                    ("ms-piggyback-cseq", str(sub.local_cseq)), ("Supported", PIGGYBACK)]
        if content_type.startswith(documents.MULTIPART):
            headers.append(("Require", "eventlist"))
        response = make_response(request, 200, to_tag=sub.local_tag, headers=headers,
                                 body=body.encode(), content_type=content_type)
        return core.respond(request, txn, response, now)

    # -- NOTIFY ------------------------------------------------------------------------
    def _notify(self, sub: Subscription, rendered: tuple[str, str, int], now: float,
                core: Endpoint, reason: str = "timeout") -> list[Event]:
        """A NOTIFY in `sub`'s dialog: active with its time left, or terminated when the
        subscription has left the table (`reason`, RFC 6665 4.1.3)."""
        body, content_type, sub.signature = rendered
        held = self.table.get(sub.key) is sub
        left = max(0, round(sub.expires_at - now))
        state = _state(left) if held and left else f"terminated;reason={reason}"
        peer = sub.peer
        dialog = Dialog(sub.call_id, sub.local_tag, sub.remote_tag,
                        parse_name_addr(sub.local, "From"), parse_name_addr(sub.remote, "To"),
                        sub.remote_target, sub.route_set, sub.local_cseq, sub.remote_cseq,
                        secure=False, state=DialogState.CONFIRMED, is_uac=False)
        headers = [("Event", sub.event), ("Subscription-State", state),
                   ("Contact", self.local.contact(peer.transport, peer.host))]
        if content_type.startswith(documents.MULTIPART):
            headers.append(("Require", "eventlist"))
        notify = dialog.create_request("NOTIFY", self.local.via(peer.transport, peer.host),
                                       headers=tuple(headers), body=body.encode(),
                                       content_type=content_type)
        sub.local_cseq = dialog.local_cseq
        self._count("notify_sent")
        mark = NotifySent(sub.key, final=not held or not left)
        return core.send_request(notify, peer, now, tu_data=mark)[1]

    def answered(self, mark: NotifySent, status: int | None, now: float) -> None:
        """The answer to a NOTIFY of ours (None: none came, or it could not be sent).
        Another failure (a 500, 503, 491: the subscriber busy for now) is retried with
        the state as it is then, after 2, 4 and 8 s; after that the subscriber is taken to
        be gone."""
        if status is not None and status < 300:
            self._retries.pop(mark.key, None)
            return
        attempt = self._retries.get(mark.key, 0) + 1
        if status is None or status in _ENDS_USAGE or attempt > _RETRIES or mark.final:
            self._retries.pop(mark.key, None)
            sub = self.table.remove(mark.key)
            if sub is not None:
                self._count("dropped")
                log.info("presence_subscription_dropped", call_id=mark.key[0],
                         status=status or "no answer")
            return
        self._retries[mark.key] = attempt
        heapq.heappush(self._retry_at, (now + 2.0 ** attempt, mark.key))
        self._count("notify_retried")

    # -- time ----------------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        expiry = self.table.next_deadline()
        if not self._retry_at:
            return expiry
        retry = self._retry_at[0][0]
        return retry if expiry is None or retry < expiry else expiry

    def handle_timeout(self, now: float, core: Endpoint) -> list[Event]:
        out: list[Event] = []
        for sub in self.table.expired(now):
            self._count("expired")
            self._retries.pop(sub.key, None)
            out += self._notify(sub, self._render(sub), now, core)
        retry_at = self._retry_at
        while retry_at and retry_at[0][0] <= now:
            _, key = heapq.heappop(retry_at)
            held = self.table.get(key)
            if held is None:
                self._retries.pop(key, None)
            elif key in self._retries:
                out += self._notify(held, self._render(held), now, core)
        return out

    # -- documents -----------------------------------------------------------------------
    def _render(self, sub: Subscription) -> tuple[str, str, int]:
        """(body, content type, signature) of the full state for `sub` now."""
        if not sub.list_uri:
            body, signature = self._document(sub.fmt, sub.resources[0])
            return body, sub.fmt, signature
        parts = [(uri, self._document(sub.fmt, uri)) for uri in sub.resources]
        content_type, body = documents.batch(
            sub.fmt, sub.list_uri, [(uri, doc) for uri, (doc, _) in parts], self.generation)
        return body, content_type, hash(tuple(sig for _, (_, sig) in parts))

    def _document(self, fmt: str, uri: str) -> tuple[str, int]:
        key = (fmt, uri)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        found = answer(self.router, uri)
        url = f"{self.avatar_base}{found.avatar_path}" if (
            self.avatar_base and found.avatar_path) else ""
        body = documents.document(fmt, found, uri, url, self.generation, self._published)
        # What the subscriber sees, not the document's bytes: the version and time change
        # with every reload even where the answer does not.
        result = (body, hash((found.available, found.name, found.description, url)))
        if len(self._cache) >= _CACHE_SIZE:
            self._cache.clear()
        self._cache[key] = result
        return result

    # -- helpers -------------------------------------------------------------------------
    def _refuse(self, request: Request, txn: ServerTransaction, status: int, reason: str,
                now: float, core: Endpoint,
                headers: tuple[tuple[str, str], ...] = ()) -> list[Event]:
        log.info("presence_refused", call_id=request.call_id, status=status, reason=reason)
        return core.respond(request, txn, make_response(
            request, status, reason, to_tag=core.new_tag(), headers=headers), now)

    def _count(self, key: str) -> None:
        self.counters[key] = self.counters.get(key, 0) + 1


def _event(request: Request) -> str:
    """The Event header our NOTIFYs repeat: with the SUBSCRIBE's `id` if it had one
    (RFC 6665 8.2.1), else the one shared string."""
    value = request.headers.get("Event") or ""
    _, _, params = value.partition(";")
    for param in params.split(";"):
        name, _, given = param.partition("=")
        if name.strip().lower() == "id" and given.strip():
            return f"presence;id={given.strip()}"
    return "presence"


def _accepted(request: Request) -> list[str]:
    return [part.partition(";")[0].strip().lower()
            for value in request.headers.get_all("Accept") for part in value.split(",")
            if part.strip()]


def _state(expires: int) -> str:
    return f"active;expires={expires}" if expires else "terminated;reason=timeout"


def _timestamp(when: float) -> str:
    return dt.datetime.fromtimestamp(when, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
