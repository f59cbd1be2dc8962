"""All the relayed streams of one call, and the media timeout that ends a call nobody is
sending anything on any more. The timeout is checked by call control on its deadline heap
(`check_interval`, `expired`), like its other timers: no loop timer of its own."""

from __future__ import annotations

from gateway.media.relay import StreamRelay
from gateway.media.video_relay import VideoRelay


class CallMedia:
    def __init__(self, streams: list[StreamRelay], *, timeout: float) -> None:
        self.streams = streams
        self.timeout = timeout  # 0: never

    @property
    def check_interval(self) -> float | None:
        """How often `expired` is worth asking (None: never): a quarter of the timeout,
        so a call ends at most a quarter late, between 50 ms and 5 s."""
        if not self.timeout or not self.streams:
            return None
        return max(0.05, min(self.timeout / 4, 5.0))

    def expired(self, now: float) -> str | None:
        """The reason to end the call, when every stream has been silent too long. `now` is
        on the relay's clock (the event loop's)."""
        if not self.timeout or not self.streams:
            return None
        silent = {s.media: s.silent_for(now) for s in self.streams}
        if all(quiet >= self.timeout for quiet in silent.values()):
            detail = ", ".join(f"{media} {quiet:.0f} s" for media, quiet in silent.items())
            return f"media timeout: no packets for {self.timeout:g} s ({detail})"
        return None

    def counters(self) -> dict[str, dict[str, dict[str, object]]]:
        """{media: {"lync->sip": {...}, "sip->lync": {...}}} for the CDR and status API."""
        return {s.media: {f"{a}->{b}": st.as_dict() for (a, b), st in s.stats.items()}
                for s in self.streams}

    def video_stats(self) -> list[dict[str, object]]:
        """For each translated video stream (Lync X-H264UC <-> SIP H264), its translation
        and feedback counters (`VideoRelay.video_stats`): whether video flowed each way, at
        what picture size, with how many key frames, VSRs and dropped frames. Empty when
        the call has none."""
        return [s.video_stats() for s in self.streams if isinstance(s, VideoRelay)]
