"""What call control asks its adapter to do: the waits and the I/O a sans-I/O core cannot do
itself. `B2bua.take_actions()` hands them over (as aioquic's `datagrams_to_send`); the
adapter (`gateway.daemon.call_io`) carries each out and feeds the outcome back."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.calls.media_side import AddsStreams, MediaSide, StopsStreams
from gateway.calls.prompter import Prompting
from gateway.sip.uri import SipUri


@dataclass(frozen=True, slots=True)
class Prepare:
    """Take the call's media resources (`MediaSide.reserve` at once, then `prepare` if it
    gathers) and look up `resolve` (RFC 3263) if set; then `B2bua.prepared` with the
    targets found (None when nothing was looked up) or the error."""

    call_id: int
    media: MediaSide
    resolve: SipUri | None = None
    federation: bool = False  # toward Lync: try the federation SRV record first


ICE_TIMEOUT = 15.0  # from our answer to a selected pair toward Lync


@dataclass(frozen=True, slots=True)
class Connect:
    """Await `MediaSide.connect(timeout)`; then `B2bua.media_connected`."""

    call_id: int
    media: MediaSide
    timeout: float


@dataclass(frozen=True, slots=True)
class Close:
    """`MediaSide.close()`, and await what it leaves to wait for."""

    media: MediaSide


@dataclass(frozen=True, slots=True)
class StopStreams:
    """`StopsStreams.stop_streams(kinds, why)`, and await what it leaves to wait for."""

    media: StopsStreams
    kinds: frozenset[str]
    why: str


@dataclass(frozen=True, slots=True)
class AddStreams:
    """Await `AddsStreams.prepare_added()`, or with `timeout` (both legs have answered)
    `connect_added(timeout)`; then `B2bua.streams_added` with whether it was the
    connecting step, and the error."""

    call_id: int
    media: AddsStreams
    timeout: float | None = None


@dataclass(frozen=True, slots=True)
class Play:
    """Play `prompts` in a row on a reception's media, cutting off what was playing; then
    `B2bua.played`. `listen`: from now on, the caller's keypad goes to `B2bua.digit`."""

    call_id: int
    media: Prompting
    prompts: tuple[str, ...]
    listen: bool = False


@dataclass(frozen=True, slots=True)
class Silence:
    """Stop the prompt playing (the caller started typing)."""

    media: Prompting


Action = Prepare | Connect | Close | StopStreams | AddStreams | Play | Silence
