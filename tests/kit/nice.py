"""libnice as a test's ICE agent: tests/kit/nice_agent.py run by Debian's python3 (where
python3-gi and gir1.2-nice-0.1 are), behind the face of an aioice.Connection
(local_username, local_password, local_candidates, remote_username, remote_password,
add_remote_candidate, connect, send, recv, close), so the kit's Lync endpoint helpers
(tests/kit/lync.py) take either agent. Media crosses to the subprocess as loopback
datagrams; ICE itself is libnice's alone."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aioice

AGENT = Path(__file__).parent / "nice_agent.py"
PYTHON = "/usr/bin/python3"


class _Media(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.got.put_nowait(data)


class NiceAgent:
    """One libnice agent with one component, host candidates on 127.0.0.1; `compat` is
    libnice's mode: 'oc2007r2' (Microsoft's ICE as Lync 2010/2013 speak it) or 'rfc5245'."""

    def __init__(self, proc: asyncio.subprocess.Process, gathered: dict[str, Any],
                 media: asyncio.DatagramTransport, protocol: _Media) -> None:
        self._proc, self._media, self._protocol = proc, media, protocol
        self.local_username: str = gathered["ufrag"]
        self.local_password: str = gathered["pwd"]
        self.local_candidates = [aioice.Candidate.from_sdp(c.removeprefix("candidate:"))
                                 for c in gathered["candidates"]]
        self._agent_media = ("127.0.0.1", int(gathered["media"]))
        self.remote_username = ""
        self.remote_password = ""
        self._remote: list[str] = []
        self._started = False
        self.pair: list[str] = []  # libnice's selected pair: its local, then remote address
        self.seconds = 0.0  # libnice's time from its checks' start to the selected pair

    @classmethod
    async def start(cls, compat: str = "oc2007r2", controlling: bool = False,
                    pacing_ms: int = 0) -> NiceAgent:
        """`pacing_ms`: Ta, the interval between libnice's own checks (0: libnice's)."""
        proc = await asyncio.create_subprocess_exec(
            PYTHON, str(AGENT), "--compat", compat, "--controlling", str(int(controlling)),
            "--pacing-ms", str(pacing_ms),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        try:
            gathered = await _line(proc)
        except BaseException:
            proc.kill()
            await proc.wait()
            raise
        media, protocol = await asyncio.get_running_loop().create_datagram_endpoint(
            _Media, local_addr=("127.0.0.1", 0))
        return cls(proc, gathered, media, protocol)

    async def add_remote_candidate(self, candidate: aioice.Candidate | None) -> None:
        if candidate is not None:
            self._remote.append("candidate:" + candidate.to_sdp())

    async def start_checks(self) -> None:
        """Hands libnice the peer's credentials and candidates, with our media port: its
        checks start."""
        assert self._proc.stdin is not None and not self._started
        self._started = True
        remote = {"ufrag": self.remote_username, "pwd": self.remote_password,
                  "candidates": self._remote, "media": self._media.get_extra_info("sockname")[1]}
        self._proc.stdin.write((json.dumps(remote) + "\n").encode())
        await self._proc.stdin.drain()

    async def connect(self) -> None:
        """Waits until libnice has selected a pair (ConnectionError if it failed), its checks
        started first if `start_checks` has not."""
        if not self._started:
            await self.start_checks()
        state = await _line(self._proc)
        if state.get("state") != "ready":
            raise ConnectionError(f"libnice ICE {state}")
        self.pair, self.seconds = state["pair"], float(state["seconds"])

    async def send(self, data: bytes) -> None:
        self._media.sendto(data, self._agent_media)

    async def recv(self) -> bytes:
        return await self._protocol.got.get()

    async def close(self) -> None:
        self._media.close()
        if self._proc.returncode is None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()  # the agent's end: it quits when stdin closes
            try:
                await asyncio.wait_for(self._proc.wait(), 5)
            except TimeoutError:
                self._proc.kill()
                await self._proc.wait()


async def _line(proc: asyncio.subprocess.Process) -> dict[str, Any]:
    assert proc.stdout is not None
    data = await asyncio.wait_for(proc.stdout.readline(), 20)
    if not data:
        raise RuntimeError("libnice agent exited (is gir1.2-nice-0.1 installed? "
                           "scripts/install --test)")
    result: dict[str, Any] = json.loads(data)
    return result
