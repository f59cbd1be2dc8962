"""Real H.264 encoders and decoders as the judges of the video translators: GStreamer's
x264enc + rtph264pay make RFC 6184 packets (sent over 127.0.0.1 UDP, as an endpoint would),
rtph264depay + ffmpeg's decoder turn packets back into frames (framemd5), and tshark
dissects packets from a pcap; a Lync-side receiver takes [MS-H264PF] packets apart as
RFC 6184 and RFC 6190 say, for ffmpeg to decode, and a Lync-side sender writes x264's
access units as [MS-H264PF] (PACSI, prefix units). Nothing here shares code with
gateway.media."""

from __future__ import annotations

import asyncio
import socket
import struct
import subprocess
import threading
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from tests.peers import need

PT = 96
# NAL unit types a Lync receiver's AVC decoder never sees: SVC prefix, subset SPS, SVC
# slice (H.264 Annex G) and PACSI (RFC 6190 4.9).
SVC_AND_PACSI = {14, 15, 20, 30}


def encode(tmp: Path, *, frames: int = 60, width: int = 640, height: int = 360,
           profile: str = "constrained-baseline", key_interval: int = 30,
           mtu: int = 1200, pattern: str = "ball") -> list[bytes]:
    """The RTP packets GStreamer sends for `frames` frames of its test pattern, received on
    a loopback socket in the order they were sent."""
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(0.5)
    port = receiver.getsockname()[1]
    packets: list[bytes] = []
    done = threading.Event()

    def receive() -> None:
        while True:
            try:
                packets.append(receiver.recv(65535))
            except TimeoutError:
                if done.is_set():
                    return

    thread = threading.Thread(target=receive)
    thread.start()
    try:
        subprocess.run(
            [need("gst-launch-1.0"), "-q", "videotestsrc", f"pattern={pattern}",
             f"num-buffers={frames}", "!",
             f"video/x-raw,width={width},height={height},framerate=30/1", "!",
             "x264enc", "tune=zerolatency", "speed-preset=ultrafast",
             f"key-int-max={key_interval}", "!", f"video/x-h264,profile={profile}", "!",
             "rtph264pay", "config-interval=1", f"pt={PT}", f"mtu={mtu}", "!",
             # sync=false with a steady source: packets paced by the encoder, not a clock
             "udpsink", "host=127.0.0.1", f"port={port}", "sync=false"],
            check=True, capture_output=True, timeout=60)
    finally:
        done.set()
        thread.join()
        receiver.close()
    return packets


def source_video(factory: pytest.TempPathFactory) -> tuple[Path, list[bytes]]:
    """For a module's fixture: x264's RFC 6184 packets for 60 frames of 640x360 (two key
    frames), and a directory for the judges' files."""
    tmp = factory.mktemp("video")
    return tmp, encode(tmp, frames=60, key_interval=30)


def write_pcap(path: Path, packets: list[bytes], port: int = 5004) -> None:
    """`packets` as UDP datagrams 127.0.0.1:port -> 127.0.0.1:port, LINKTYPE_RAW (IPv4)."""
    with path.open("wb") as out:
        out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 101))
        for index, payload in enumerate(packets):
            udp = struct.pack("!HHHH", port, port, 8 + len(payload), 0) + payload
            header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), index & 0xFFFF,
                                 0, 64, 17, 0, bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1]))
            checksum = sum(struct.unpack("!10H", header))
            while checksum >> 16:
                checksum = (checksum & 0xFFFF) + (checksum >> 16)
            header = header[:10] + struct.pack("!H", ~checksum & 0xFFFF) + header[12:]
            frame = header + udp
            seconds, micros = divmod(index * 1000, 1_000_000)  # 1 ms apart
            out.write(struct.pack("<IIII", seconds, micros, len(frame), len(frame)))
            out.write(frame)


def frames(tmp: Path, packets: list[bytes], name: str) -> list[str]:
    """The frames GStreamer's RFC 6184 depayloader and ffmpeg's H.264 decoder get from
    `packets`: one framemd5 line (hash of the decoded picture) per frame."""
    pcap = tmp / f"{name}.pcap"
    stream = tmp / f"{name}.h264"
    write_pcap(pcap, packets)
    caps = (f"application/x-rtp,media=video,clock-rate=90000,encoding-name=H264,"
            f"payload={PT}")
    subprocess.run(
        [need("gst-launch-1.0"), "-q", "filesrc", f"location={pcap}", "!", "pcapparse",
         f"caps={caps}", "!", "rtph264depay", "!", "h264parse", "!",
         "video/x-h264,stream-format=byte-stream,alignment=au", "!", "filesink",
         f"location={stream}"],
        check=True, capture_output=True, timeout=60)
    return framemd5(stream)


def nal_units(packets: list[bytes]) -> list[tuple[int, bytes]]:
    """(RTP timestamp, NAL unit) of each unit in RFC 6184 / [MS-H264PF] `packets` (as
    received, in order, no CSRCs or header extension): single NAL unit packets, STAP-As and
    FU-As taken apart."""
    units: list[tuple[int, bytes]] = []
    fragment = bytearray()
    for packet in packets:
        timestamp = int.from_bytes(packet[4:8], "big")
        payload = packet[12:]
        kind = payload[0] & 0x1F
        if kind == 24:  # STAP-A: 16-bit size, unit, ...
            at = 1
            while at + 2 <= len(payload):
                size = int.from_bytes(payload[at:at + 2], "big")
                units.append((timestamp, payload[at + 2:at + 2 + size]))
                at += 2 + size
        elif kind == 28:  # FU-A: indicator, header (S, E, type), piece
            if payload[1] & 0x80:
                fragment = bytearray([(payload[0] & 0xE0) | (payload[1] & 0x1F)])
            fragment += payload[2:]
            if payload[1] & 0x40:
                units.append((timestamp, bytes(fragment)))
        else:
            units.append((timestamp, payload))
    return units


def lync_frames(tmp: Path, packets: list[bytes], name: str) -> list[str]:
    """The frames ffmpeg decodes from [MS-H264PF] packets: the SVC and PACSI units left
    out, the rest as an Annex B byte stream."""
    stream = b"".join(b"\x00\x00\x00\x01" + nal for _, nal in nal_units(packets)
                      if nal[0] & 0x1F not in SVC_AND_PACSI)
    path = tmp / f"{name}.h264"
    path.write_bytes(stream)
    return framemd5(path)


def lync_packets(packets: list[bytes], *, ssrc: int, payload_type: int,
                 mtu: int = 1200) -> list[bytes]:
    """RFC 6184 `packets` (one SSRC, in order) as a Lync client sends its base layer
    ([MS-H264PF], RFC 6190): each access unit opened by a PACSI NAL unit (RFC 6190 4.9,
    its S and E flags set, nothing aggregated in it), each slice after a prefix NAL unit
    (type 14, H.264 G.7.3.1.1 / G.7.3.2.12), small units aggregated in STAP-As, large ones
    in FU-As, the marker on each access unit's last packet."""
    frames: list[tuple[int, list[bytes]]] = []
    for timestamp, nal in nal_units(packets):
        if not frames or frames[-1][0] != timestamp:
            frames.append((timestamp, []))
        frames[-1][1].append(nal)
    out: list[bytes] = []
    for timestamp, nals in frames:
        idr = any(nal[0] & 0x1F == 5 for nal in nals)
        nri = max(nal[0] & 0x60 for nal in nals)
        # SVC extension: R=1, I (IDR), PRID 0 | N 0, DID 0, QID 0 | TID 0, U 0, D 0, O 1, RR 3
        extension = bytes([0x80 | (0x40 if idr else 0), 0x00, 0x07])
        # PACSI flags X Y T A P C S E: no optional fields, A (anchor) for an IDR, S and E.
        units = [bytes([nri | 30]) + extension + bytes([(0x10 if idr else 0) | 0x03])]
        for nal in nals:
            if nal[0] & 0x1F in (1, 5):
                # prefix_nal_unit_rbsp: store_ref_base_pic_flag 0, no extension, trailing
                # bits, for a reference picture; empty otherwise.
                rbsp = b"\x20" if nal[0] & 0x60 else b""
                units.append(bytes([(nal[0] & 0x60) | 14]) + extension + rbsp)
            units.append(nal)
        payloads = _packetised(units, mtu)
        for index, payload in enumerate(payloads):
            marker = 0x80 if index == len(payloads) - 1 else 0
            sequence = len(out) & 0xFFFF
            out.append(struct.pack("!BBHII", 0x80, marker | payload_type, sequence,
                                   timestamp, ssrc) + payload)
    return out


def _packetised(units: list[bytes], mtu: int) -> list[bytes]:
    """RTP payloads for `units` in order: runs of units that fit together in a STAP-A, a
    unit alone when it fits by itself, FU-As for one that does not."""
    payloads: list[bytes] = []
    run: list[bytes] = []

    def flush() -> None:
        if len(run) == 1:
            payloads.append(run[0])
        elif run:
            nri = max(unit[0] & 0x60 for unit in run)
            payloads.append(bytes([nri | 24]) + b"".join(
                len(unit).to_bytes(2, "big") + unit for unit in run))
        run.clear()

    for unit in units:
        if len(unit) > mtu:
            flush()
            body = unit[1:]
            pieces = [body[at:at + mtu - 2] for at in range(0, len(body), mtu - 2)]
            for index, piece in enumerate(pieces):
                header = (0x80 if index == 0 else 0) | (
                    0x40 if index == len(pieces) - 1 else 0) | (unit[0] & 0x1F)
                payloads.append(bytes([(unit[0] & 0x60) | 28, header]) + piece)
            continue
        if run and 1 + sum(2 + len(u) for u in run) + 2 + len(unit) > mtu:
            flush()
        run.append(unit)
    flush()
    return payloads


async def paced(send: Callable[[bytes], Awaitable[None]], packets: list[bytes]) -> None:
    """`packets` sent as an encoder at a few Mbit/s would: a pause after every fourth, so
    that loopback socket buffers never overflow."""
    for index, packet in enumerate(packets):
        await send(packet)
        if index % 4 == 3:
            await asyncio.sleep(0.002)


def framemd5(stream: Path) -> list[str]:
    """ffmpeg's hash of each picture it decodes from an Annex B H.264 file."""
    md5 = subprocess.run(
        [need("ffmpeg"), "-hide_banner", "-loglevel", "error", "-f", "h264", "-i",
         str(stream), "-f", "framemd5", "-"],
        check=True, capture_output=True, timeout=60).stdout.decode()
    # Each line: stream, dts, pts, duration, size, hash; the picture is what must match.
    return [line.split(",")[-1].strip() for line in md5.splitlines()
            if line and not line.startswith("#")]


def dissect(tmp: Path, packets: list[bytes], name: str, fields: list[str],
            payload_type: int | None = None) -> tuple[list[list[str]], str]:
    """tshark's reading of `packets` as RTP carrying H.264 on `payload_type` (as RTCP when
    None): the `fields` of each packet (occurrences joined by ','), and the expert
    information of warning level and above."""
    pcap = tmp / f"{name}.pcap"
    write_pcap(pcap, packets)
    base = [need("tshark"), "-r", str(pcap)]
    if payload_type is None:
        base += ["-d", "udp.port==5004,rtcp"]
    else:
        base += ["-d", "udp.port==5004,rtp", "-d", f"rtp.pt=={payload_type},h264"]
    table = subprocess.run(
        [*base, "-T", "fields", "-E", "occurrence=a", "-E", "aggregator=,",
         *[arg for name_ in fields for arg in ("-e", name_)]],
        check=True, capture_output=True, timeout=60).stdout.decode()
    expert = subprocess.run([*base, "-q", "-z", "expert,warn"], check=True,
                            capture_output=True, timeout=60).stdout.decode()
    return [line.split("\t") for line in table.splitlines()], expert


def raw_fields(tmp: Path, packets: list[bytes], name: str, field: str) -> list[str]:
    """The octets (hex, before any bit mask) under each occurrence of `field` as tshark
    reads `packets` as RTCP: where the dissector finds a field, whatever it makes of it."""
    pcap = tmp / f"{name}.pcap"
    write_pcap(pcap, packets)
    pdml = subprocess.run(
        [need("tshark"), "-r", str(pcap), "-d", "udp.port==5004,rtcp", "-T", "pdml"],
        check=True, capture_output=True, timeout=60).stdout
    return [node.get("unmaskedvalue", node.get("value", ""))
            for node in ET.fromstring(pdml).iter("field") if node.get("name") == field]
