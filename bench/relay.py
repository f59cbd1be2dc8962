"""Media relay throughput: lyncgate's relay and rtpengine (userspace, no kernel module) side
by side, same packet generator, same streams, same run.

Each stream is one direction of an audio call: 200-byte RTP packets sent to the relay,
which forwards them to a sink, either plain RTP -> RTP or SRTP -> RTP (the relay decrypts,
as toward a standard SIP endpoint). We read each relay's CPU seconds (all threads) before
and after and print packets forwarded per CPU-second. Goal (issue 6): lyncgate >= 0.3x
rtpengine for SRTP -> RTP.

With --video, video instead, lyncgate alone: half the streams from Lync (SRTP, X-H264UC
[MS-H264PF] packets made by the gateway's own ToLync) to the SIP side, half from the SIP side
(RTP, RFC 6184) to Lync, both at the size and rate of 720p30 at 1.5 Mbit/s, through the
translating relay (VideoRelay: headers rewritten, PACSI and prefix units, SRTP) and through
the plain relay, the same packets in the same run: after a shorter warm-up round of each,
`--rounds` rounds alternating the two, the least CPU of each kept: on a shared 2-core
machine single rounds range about +-10% around the ratio, so the default is 9 rounds. The
sink polls rather than waits on its socket (see `drive`). Goal (issue 18): translating >=
0.7x plain, in packets in per CPU-second; and the concurrent 720p30 video calls per core
that implies. The translator runs as the install built it (compiled with mypyc where it
could, setup.py), which the figures name; --pure-too adds a worker running it as pure
Python, in the same rounds (docs/architecture.md has the figures of both).

    .venv/bin/python bench/relay.py [--streams 50] [--packets 2000] [--rate 20000]
                                    [--video [--rounds 9] [--pure-too]]
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

from gateway.media.h264 import packetize  # noqa: E402
from gateway.media.native import PURE_ENV  # noqa: E402
from gateway.media.video_translate import ToLync  # noqa: E402

PAYLOAD = 200 - 12
# A 720p30 stream at 1.5 Mbit/s: 6,250 octets a frame, a key frame every 2 s three times
# that; the SPS (640x480 constrained baseline) only gives the PACSI a size to state.
VIDEO_FPS = 30
FRAME_OCTETS = 1_500_000 // 8 // VIDEO_FPS
SPS = bytes.fromhex("6742c01e8c8d40501e900f0884")
PPS = bytes.fromhex("68ce3c80")
SINK_POLL = 0.0005  # seconds between a polling sink's reads: 10 packets at 20,000/s


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
    def __init__(self, *, pure: bool = False) -> None:
        """`pure`: the video translator as pure Python even where it is compiled."""
        env = {k: v for k, v in os.environ.items() if k != PURE_ENV}
        if pure:
            env[PURE_ENV] = "1"
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "relay_worker.py")], cwd=ROOT,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.translator = ""  # how the worker's video translator runs, once it has said

    def streams(self, keys: list[str | None], sink: int) -> list[int]:
        return self.add([{"key": k, "sink": sink} for k in keys])

    def add(self, streams: list[dict[str, object]]) -> list[int]:
        """The worker's inbound ports for `streams` (relay_worker.py's specification)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"streams": streams}) + "\n")
        self.proc.stdin.flush()
        reply = json.loads(self.proc.stdout.readline())
        self.translator = reply["translator"]
        ports: list[int] = reply["ports"]
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


def video_packets(count: int, key: str) -> tuple[list[bytes], list[bytes]]:
    """`count` packets of the SIP endpoint's RFC 6184 stream, and the SRTP packets Lync would
    send for the same pictures ([MS-H264PF], as ToLync writes it)."""
    sip: list[bytes] = []
    frame = 0
    while len(sip) < count:
        key_frame = frame % (2 * VIDEO_FPS) == 0
        body = os.urandom(FRAME_OCTETS * (3 if key_frame else 1))
        nals = [SPS, PPS, b"\x65" + body] if key_frame else [b"\x41" + body]
        payloads = packetize(nals, 1200)
        for index, payload in enumerate(payloads):
            marker = 0x80 if index == len(payloads) - 1 else 0
            sip.append(struct.pack("!BBHII", 0x80, marker | 96, len(sip) & 0xFFFF,
                                   frame * 3000, 0x5151) + payload)
        frame += 1
    sip = sip[:count]
    to_lync = ToLync(ssrc=0x1000, payload_type=122, bitrate=1_500_000)
    tx = pylibsrtp.Session(pylibsrtp.Policy(
        key=base64.b64decode(key), ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
        srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80))
    lync = [tx.protect(p) for each in sip for p in to_lync.push(each, 0.0)][:count]
    return sip, lync


def run(relay: Rtpengine | Lyncgate, pid: int, srtp: bool, streams: int, count: int,
        rate: float) -> tuple[float, int, int]:
    """(CPU seconds, packets sent, packets received at the sink)."""
    sink = open_sink()
    keys = [base64.b64encode(os.urandom(30)).decode() if srtp else None
            for _ in range(streams)]
    ports = relay.streams(keys, int(sink.getsockname()[1]))
    return drive(pid, sink, ports, packets(keys, count), rate)


def run_video(ours: Lyncgate, translate: bool, streams: int, count: int, rate: float,
              ready: tuple[list[bytes], list[bytes]], key: str) -> tuple[float, int, int]:
    """Half the streams from Lync, half from the SIP side, each with the same first `count`
    packets."""
    sink = open_sink()
    sink_port = int(sink.getsockname()[1])
    directions = ["lync" if n % 2 == 0 else "sip" for n in range(streams)]
    ports = ours.add([{"key": key, "sink": sink_port, "video": d, "translate": translate}
                      for d in directions])
    sip, lync = ready[0][:count], ready[1][:count]
    return drive(ours.proc.pid, sink, ports, [lync if d == "lync" else sip
                                               for d in directions], rate, polling_sink=True)


def open_sink() -> socket.socket:
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
    return sink


def drive(pid: int, sink: socket.socket, ports: list[int], ready: list[list[bytes]],
          rate: float, *, polling_sink: bool = False) -> tuple[float, int, int]:
    """`ready[n]` to `ports[n]`, round robin, paced at `rate`: (CPU seconds of `pid`,
    packets sent, packets received at `sink`).

    On loopback the sender of a datagram does the receiver's kernel work too, waking it
    when it waits on the socket; with `polling_sink` the sink never waits there (it reads
    what has come every SINK_POLL seconds), so what `pid` is charged for a packet out does
    not depend on how the relay's timing happens to meet the sink's waits (a relay that
    takes longer per packet finds it waiting more often, and in the video bench that
    wake-up cost more than the translation itself)."""
    received = [0]
    stop = threading.Event()

    def drain() -> None:
        if polling_sink:
            sink.setblocking(False)
        else:
            sink.settimeout(0.2)
        while not stop.is_set():
            try:
                sink.recv(2048)
                received[0] += 1
            except TimeoutError:
                continue
            except BlockingIOError:
                time.sleep(SINK_POLL)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    time.sleep(0.3)
    before = cpu_seconds(pid)
    started = time.perf_counter()
    sent = 0
    for seq in range(max(len(stream) for stream in ready)):
        for port, stream in zip(ports, ready, strict=True):
            if seq < len(stream):
                out.sendto(stream[seq], ("127.0.0.1", port))
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


def video(args: argparse.Namespace) -> None:
    workers = {"": Lyncgate()}
    if args.pure_too:
        workers["pure Python "] = Lyncgate(pure=True)
    key = base64.b64encode(os.urandom(30)).decode()
    ready = video_packets(args.packets, key)
    runs = [(name, translate) for name in workers for translate in (True, False)]
    try:
        # A first, shorter round of each: a worker's first run pays for its warming up
        # (allocator arenas, sockets), which is not what is compared.
        for name, translate in runs:
            run_video(workers[name], translate, args.streams, args.packets // 5, args.rate,
                      ready, key)
        # Rounds alternate them all, so that load from elsewhere on the machine falls on
        # each alike; the least CPU of each is kept, as such load only ever adds.
        rounds = [{each: run_video(workers[each[0]], each[1], args.streams, args.packets,
                                   args.rate, ready, key) for each in runs}
                  for _ in range(args.rounds)]
    finally:
        for worker in workers.values():
            worker.stop()
    sip, lync = ready
    print(f"video relay, {args.streams} streams (half each way) x {args.packets} packets, "
          f"720p30 at 1.5 Mbit/s, {args.rate:,.0f} packets/s, best of {args.rounds} rounds")
    rates = {}
    for name, translate in runs:
        cpu, sent, got = min((each[(name, translate)] for each in rounds), key=lambda r: r[0])
        label = name + ("translating" if translate else "plain")
        rates[(name, translate)] = sent / cpu if cpu else float("inf")
        print(f"  {label:23} cpu {cpu:6.2f} s  in {sent:7d}  out {got:7d}  "
              f"{rates[(name, translate)]:10,.0f} packets in/CPU-s")
    per_call = per_second(sip) + per_second(lync)
    for name, worker in workers.items():
        each_round = ", ".join(f"{each[(name, False)][0] / each[(name, True)][0]:.2f}x"
                               for each in rounds)
        print(f"  translator {worker.translator}:")
        print(f"    ratio translating/plain: {rates[(name, True)] / rates[(name, False)]:.2f}x "
              f"(goal >= 0.7x; round by round {each_round})")
        print(f"    one core translates about {rates[(name, True)] / per_call:,.0f} "
              "concurrent video calls")
    print(f"  (a 720p30 call at 1.5 Mbit/s each way is {per_second(sip):.0f} packets/s from "
          f"the SIP side and {per_second(lync):.0f} from Lync, 1200-octet payloads)")


def per_second(stream: list[bytes]) -> float:
    """Packets a second of a stream at VIDEO_FPS whose timestamps start at 0 (the RTP
    header stays clear under SRTP)."""
    frames = int.from_bytes(stream[-1][4:8], "big") // 3000 + 1
    return len(stream) * VIDEO_FPS / frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=50)
    parser.add_argument("--packets", type=int, default=2000, help="per stream")
    parser.add_argument("--rate", type=float, default=20000, help="packets/s, all streams")
    parser.add_argument("--video", action="store_true",
                        help="translating video relay against the plain one, lyncgate only")
    parser.add_argument("--rounds", type=int, default=9,
                        help="with --video: rounds of both, the least CPU of each kept")
    parser.add_argument("--pure-too", action="store_true",
                        help=f"with --video: also a worker with {PURE_ENV}=1, the translator "
                        "as pure Python where the install compiled it")
    args = parser.parse_args()
    if args.video:
        video(args)
        return
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
