"""Media relay throughput: lyncgate's relay and rtpengine (userspace, no kernel module) side
by side, same packet generator, same streams, same run.

Each stream is one direction of an audio call: 200-byte RTP packets sent to the relay,
which forwards them to a sink, either plain RTP -> RTP or SRTP -> RTP (the relay decrypts,
as toward a standard SIP endpoint). We read each relay's CPU seconds (all threads) before
and after and print packets forwarded per CPU-second. Goal (issue 6): lyncgate >= 0.3x
rtpengine for SRTP -> RTP.

    .venv/bin/python bench/relay.py [--streams 50] [--packets 2000] [--rate 20000]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent]
sys.path.insert(0, str(Path(__file__).resolve().parent))

import pylibsrtp  # noqa: E402
from common import ROOT, cpu_seconds, free_port  # noqa: E402

PAYLOAD = 200 - 12


# -- the ng protocol (bencode over UDP), just what offer/answer need --------------------------
def bencode(value: object) -> bytes:
    if isinstance(value, int):
        return b"i%de" % value
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes):
        return b"%d:%s" % (len(value), value)
    if isinstance(value, list):
        return b"l" + b"".join(bencode(v) for v in value) + b"e"
    if isinstance(value, dict):
        return b"d" + b"".join(bencode(k) + bencode(v) for k, v in sorted(value.items())) + b"e"
    raise TypeError(type(value))


def bdecode(data: bytes, i: int = 0) -> tuple[object, int]:
    kind = data[i : i + 1]
    if kind == b"i":
        end = data.index(b"e", i)
        return int(data[i + 1 : end]), end + 1
    if kind in (b"l", b"d"):
        items, i = [], i + 1
        while data[i : i + 1] != b"e":
            item, i = bdecode(data, i)
            items.append(item)
        if kind == b"l":
            return items, i + 1
        mapping: dict[str, object] = {}
        for key, value in zip(items[0::2], items[1::2], strict=True):
            if not isinstance(key, bytes):
                raise ValueError(f"bencode: a dictionary key that is not a string: {key!r}")
            mapping[key.decode()] = value
        return mapping, i + 1
    colon = data.index(b":", i)
    length = int(data[i:colon])
    return data[colon + 1 : colon + 1 + length], colon + 1 + length


def ng(port: int, command: dict[str, object]) -> dict[str, object]:
    cookie = os.urandom(4).hex().encode()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.sendto(cookie + b" " + bencode(command), ("127.0.0.1", port))
        reply = s.recv(65535)
    result, _ = bdecode(reply.split(b" ", 1)[1])
    assert isinstance(result, dict)
    if result.get("result") not in (b"ok", b"pong"):
        raise RuntimeError(f"rtpengine refused {command['command']}: {result}")
    return result


def sdp(port: int, key: str | None) -> str:
    proto = "RTP/SAVP" if key else "RTP/AVP"
    crypto = f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{key}\r\n" if key else ""
    return (f"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {port} {proto} 0\r\n{crypto}a=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n")


def media_port(description: bytes) -> int:
    for line in description.decode().splitlines():
        if line.startswith("m=audio "):
            return int(line.split()[1])
    raise RuntimeError(f"no audio port in {description!r}")


# -- the two relays ----------------------------------------------------------------------------
class Rtpengine:
    def __init__(self) -> None:
        binary = shutil.which("rtpengine")
        if binary is None:
            raise SystemExit("rtpengine is not installed (Debian: rtpengine-daemon)")
        self.ng_port = free_port()
        low = 44000
        self.proc = subprocess.Popen(
            [binary, "--foreground", "--table=-1", "--interface=127.0.0.1",
             f"--listen-ng=127.0.0.1:{self.ng_port}", f"--port-min={low}",
             f"--port-max={low + 3000}", "--log-stderr", "--log-level=3", "--no-fallback",
             "--num-threads=1", "--pidfile=/dev/null", "--delete-delay=0",
             f"--listen-cli=127.0.0.1:{free_port()}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                ng(self.ng_port, {"command": "ping"})
                return
            except (OSError, RuntimeError, ValueError):
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("rtpengine did not answer ng ping")

    def streams(self, keys: list[str | None], sink: int) -> list[int]:
        ports = []
        for n, key in enumerate(keys):
            call = f"bench-{n}-{os.urandom(3).hex()}"
            ng(self.ng_port, {"command": "offer", "call-id": call, "from-tag": "a",
                              "sdp": sdp(free_port(), key), "ICE": "remove",
                              "transport-protocol": "RTP/AVP"})
            answer = ng(self.ng_port, {"command": "answer", "call-id": call, "from-tag": "a",
                                       "to-tag": "b", "sdp": sdp(sink, None), "ICE": "remove"})
            sdp_for_a = answer["sdp"]
            assert isinstance(sdp_for_a, bytes)
            ports.append(media_port(sdp_for_a))
        return ports

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


class Lyncgate:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "relay_worker.py")], cwd=ROOT,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def streams(self, keys: list[str | None], sink: int) -> list[int]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(
            {"streams": [{"key": k, "sink": sink} for k in keys]}) + "\n")
        self.proc.stdin.flush()
        ports: list[int] = json.loads(self.proc.stdout.readline())["ports"]
        return ports

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(10)


# -- generator and sink ----------------------------------------------------------------------
def packets(keys: list[str | None], count: int) -> list[list[bytes]]:
    """Per stream, `count` packets ready to send (SRTP made by libsrtp, like a Lync client)."""
    out = []
    for n, key in enumerate(keys):
        tx = None
        if key is not None:
            tx = pylibsrtp.Session(pylibsrtp.Policy(
                key=base64.b64decode(key), ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
                srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80))
        stream = []
        for seq in range(count):
            rtp = struct.pack("!BBHII", 0x80, 0, seq & 0xFFFF, seq * 160, 1000 + n) + (
                b"\x55" * PAYLOAD)
            stream.append(tx.protect(rtp) if tx is not None else rtp)
        out.append(stream)
    return out


def run(relay: Rtpengine | Lyncgate, pid: int, srtp: bool, streams: int, count: int,
        rate: float) -> tuple[float, int, int]:
    """(CPU seconds, packets sent, packets received at the sink)."""
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
    sink_port = int(sink.getsockname()[1])
    keys = [base64.b64encode(os.urandom(30)).decode() if srtp else None
            for _ in range(streams)]
    ports = relay.streams(keys, sink_port)
    ready = packets(keys, count)
    received = [0]
    stop = threading.Event()

    def drain() -> None:
        sink.settimeout(0.2)
        while not stop.is_set():
            try:
                sink.recv(2048)
                received[0] += 1
            except TimeoutError:
                continue

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    time.sleep(0.3)
    before = cpu_seconds(pid)
    started = time.perf_counter()
    sent = 0
    for seq in range(count):
        for n in range(streams):
            out.sendto(ready[n][seq], ("127.0.0.1", ports[n]))
            sent += 1
        lag = started + sent / rate - time.perf_counter()
        if lag > 0:
            time.sleep(lag)
    time.sleep(0.5)
    cpu = cpu_seconds(pid) - before
    stop.set()
    reader.join()
    out.close()
    sink.close()
    return cpu, sent, received[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=50)
    parser.add_argument("--packets", type=int, default=2000, help="per stream")
    parser.add_argument("--rate", type=float, default=20000, help="packets/s, all streams")
    args = parser.parse_args()
    engine, ours = Rtpengine(), Lyncgate()
    results: dict[tuple[str, bool], tuple[float, int, int]] = {}
    try:
        for srtp in (False, True):
            results[("rtpengine", srtp)] = run(engine, engine.proc.pid, srtp, args.streams,
                                               args.packets, args.rate)
            results[("lyncgate", srtp)] = run(ours, ours.proc.pid, srtp, args.streams,
                                              args.packets, args.rate)
    finally:
        engine.stop()
        ours.stop()
    print(f"media relay, {args.streams} streams x {args.packets} packets of 200 bytes at "
          f"{args.rate:,.0f} packets/s")
    rates = {}
    for (name, srtp), (cpu, sent, got) in results.items():
        mode = "SRTP -> RTP" if srtp else "RTP  -> RTP"
        rates[(name, srtp)] = got / cpu if cpu else float("inf")
        print(f"  {name:9} {mode}  cpu {cpu:6.2f} s  forwarded {got:7d}/{sent:7d}  "
              f"{rates[(name, srtp)]:10,.0f} packets/CPU-s")
    for srtp in (False, True):
        mode = "SRTP -> RTP" if srtp else "RTP -> RTP"
        ratio = rates[("lyncgate", srtp)] / rates[("rtpengine", srtp)]
        goal = " (goal >= 0.3x)" if srtp else ""
        print(f"  ratio lyncgate/rtpengine {mode}: {ratio:.2f}x{goal}")
    per_call = 2 * 50  # an audio call: 50 packets/s each way, SRTP one way, RTP the other
    print(f"  one core carries about {rates[('lyncgate', True)] / per_call:,.0f} concurrent "
          "audio calls through lyncgate (SRTP<->RTP, 20 ms packets)")


if __name__ == "__main__":
    main()
