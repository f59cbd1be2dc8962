"""Several nodes on PostgreSQL against one node on SQLite, in the same run (issue 24).

register  REGISTER transactions per CPU-second of the node (utime+stime from /proc): a
          cluster node (bindings in its SQLite and in PostgreSQL, each change NOTIFYed to
          the others) against a single node (SQLite alone), the same SIPp REGISTER load
          (Digest MD5: REGISTER, 401, REGISTER, 200) at the same rate. PostgreSQL's own CPU
          (postmaster and backends) is printed beside it. Goal: cluster >= 0.5x single.
latency   Set-up time of a call to a device registered at node B (a SIPp UAS that
          registered over UDP, so B holds its flow): INVITE -> 200 at a Python UAC on
          loopback, direct to B and through node A (A -> mutual TLS -> B's relay -> device),
          at --rate calls/s for --calls calls each way, in turns. Goal: p99 through A minus
          p99 direct < 5 ms.

PostgreSQL is Debian's, started in a temporary directory on loopback and removed after
(tests/kit/postgres.py). Every run is bounded; take the lock, others bench too:

    flock /tmp/bench.lock .venv/bin/python bench/cluster.py [--count 6000 --reg-rate 300]
                                                            [--calls 1500 --rate 100]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import asyncpg
import trustme
from calls import LYNCGATE_ARGS, percentile
from common import (
    ROOT,
    cpu_seconds,
    free_port,
    lyncgate,
    running,
    sipp,
    sipp_counts,
    wait_udp_answer,
)

sys.path.insert(0, str(ROOT))
from tests.kit.cluster import ROOM
from tests.kit.postgres import Postgres, running_postgres

REGISTER_UAC = ROOT / "tests" / "scenarios" / "register_uac.xml"
UAS = ROOT / "tests" / "scenarios" / "uas_rr.xml"
PASSWORD = "s3cret!"  # the kit's room1

def node_config(name: str, host: str, port: int, database: str | None,
                links: Path | None = None) -> str:
    """A node on `host`:`port` over UDP with the device and its rule; with `database`, a
    cluster member; with `links`, its certificate and the cluster CA for calls between
    nodes (node-to-node port free-picked)."""
    text = (f'[node]\nname = "{name}"\nsip_tls_fqdn = "{name}.example.com"\n'
            f'address = "{host}"\nstate_dir = "@STATE@"\n'
            f'[listen]\nudp = {port}\ntcp = 0\ntls = 0\n[tls]\nverify_mode = "off"\n')
    if links is not None:
        text += f'certificate = "{links / name}.pem"\nprivate_key = "{links / name}.key"\n'
    if database is not None:
        text += f'[cluster]\ndatabase = "{database}"\nheartbeat_seconds = 1\n'
    if links is not None:
        text += f'trusted_ca = "{links}/ca.pem"\nport = {free_port()}\n'
    return text + ROOM


# -- REGISTER per CPU-second ---------------------------------------------------------------
@dataclass
class Registered:
    name: str
    cpu: float
    ok: int
    failed: int
    database_cpu: float | None = None


def register_load(pid: int, host: str, port: int, count: int, rate: int,
                  database_pid: int | None) -> tuple[float, float | None, dict[str, int]]:
    before, db_before = cpu_seconds(pid), cpu_seconds(database_pid) if database_pid else 0.0
    out = sipp(f"{host}:{port}", REGISTER_UAC,
               ["-s", "room1", "-au", "room1", "-ap", PASSWORD, "-p", str(free_port()),
                "-m", str(count), "-r", str(rate), "-l", "500", "-recv_timeout", "5000"],
               timeout=max(60.0, 3 * count / rate))
    time.sleep(1.0)  # the cluster's last outbox pass (every 0.2 s) counted too
    cpu = cpu_seconds(pid) - before
    db = cpu_seconds(database_pid) - db_before if database_pid else None
    return cpu, db, sipp_counts(out)


def registers(server: Postgres, count: int, rate: int, work: Path) -> list[Registered]:
    out: list[Registered] = []
    for name, database in (("single (SQLite)", None), ("cluster (PostgreSQL)",
                                                       server.database())):
        port = free_port()
        with lyncgate(node_config("n1", "127.0.0.1", port, database), args=LYNCGATE_ARGS,
                      log=work / f"register-{'cluster' if database else 'single'}.log"
                      ) as gate:
            wait_udp_answer(port, timeout=30)
            cpu, db, counts = register_load(gate.pid, "127.0.0.1", port, count, rate,
                                            server.pid() if database else None)
        out.append(Registered(name, cpu, counts.get("Successful call", 0),
                              counts.get("Failed call", 0), db))
    return out


# -- set-up latency through another node ---------------------------------------------------
@dataclass
class Uac(asyncio.DatagramProtocol):
    """Calls from 127.0.0.1: INVITE, the 200 timed, ACK, BYE after `hold` seconds."""

    hold: float
    transport: asyncio.DatagramTransport | None = None
    sent: dict[str, float] = field(default_factory=dict)
    answered: dict[str, float] = field(default_factory=dict)
    ended: set[str] = field(default_factory=set)
    failed: dict[str, str] = field(default_factory=dict)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def invite(self, target: tuple[str, int]) -> None:
        assert self.transport is not None
        call = uuid.uuid4().hex
        local = self.transport.get_extra_info("sockname")[1]
        body = ("v=0\r\no=uac 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                "m=audio 40000 RTP/AVP 9\r\na=rtpmap:9 G722/8000\r\n")
        self.sent[call] = time.perf_counter()
        self.transport.sendto(self._request(
            "INVITE", f"sip:room1@{target[0]}:{target[1]}", call, 1, local, "",
            f"Contact: <sip:uac@127.0.0.1:{local}>\r\nContent-Type: application/sdp\r\n",
            body), target)

    @staticmethod
    def _request(method: str, uri: str, call: str, cseq: int, local: int, to_tag: str,
                 extra: str = "", body: str = "") -> bytes:
        return (f"{method} {uri} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bK{uuid.uuid4().hex};rport\r\n"
                f"From: <sip:uac@127.0.0.1>;tag=u{call[:8]}\r\n"
                f"To: <sip:room1@vc.example.com>{to_tag}\r\nCall-ID: {call}\r\n"
                f"CSeq: {cseq} {method}\r\nMax-Forwards: 70\r\n{extra}"
                f"Content-Length: {len(body)}\r\n\r\n{body}").encode()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        now = time.perf_counter()
        head = data.split(b"\r\n\r\n", 1)[0].decode(errors="replace").split("\r\n")
        if not head[0].startswith("SIP/2.0 "):
            return  # the B2BUA asks nothing of this UAC in these calls
        status = int(head[0].split()[1])
        fields: dict[str, str] = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            fields.setdefault(name.strip().lower(), value.strip())
        call, cseq = fields.get("call-id", ""), fields.get("cseq", "")
        if status < 200 or call not in self.sent:
            return
        if cseq.endswith("BYE"):
            self.ended.add(call)
            return
        if status >= 300:
            self.failed[call] = head[0]
            return
        if call in self.answered:
            return  # a retransmitted 200: our ACK crossed it
        self.answered[call] = now
        to = fields["to"]
        tag = to[to.index(";tag="):].split(";")[1]
        contact = fields["contact"].strip("<>").split(">")[0]
        self._send("ACK", contact, call, 1, f";{tag}", addr)
        asyncio.get_running_loop().call_later(self.hold, self._send, "BYE", contact, call, 2,
                                              f";{tag}", addr)

    def _send(self, method: str, uri: str, call: str, cseq: int, to_tag: str,
              addr: tuple[str, int]) -> None:
        if self.transport is not None and not self.transport.is_closing():
            local = self.transport.get_extra_info("sockname")[1]
            self.transport.sendto(self._request(method, uri, call, cseq, local, to_tag), addr)


async def place_calls(target: tuple[str, int], calls: int, rate: int) -> list[float]:
    """`calls` calls at `rate`/s to `target`; the INVITE -> 200 times of those answered
    (ms), after every call ended or 10 s passed. Failures are printed."""
    loop = asyncio.get_running_loop()
    transport, uac = await loop.create_datagram_endpoint(lambda: Uac(hold=0.5),
                                                         local_addr=("127.0.0.1", 0))
    try:
        start = loop.time()
        for n in range(calls):
            await asyncio.sleep(max(0.0, start + n / rate - loop.time()))
            uac.invite(target)
        deadline = loop.time() + 10
        while len(uac.ended) + len(uac.failed) < calls and loop.time() < deadline:
            await asyncio.sleep(0.05)
    finally:
        transport.close()
    lost = calls - len(uac.answered) - len(uac.failed)
    if uac.failed or lost:
        print(f"    {target}: {len(uac.failed)} failed ({sorted(set(uac.failed.values()))}),"
              f" {lost} unanswered")
    return [(uac.answered[c] - uac.sent[c]) * 1000 for c in uac.answered]


def links(folder: Path) -> Path:
    ca = trustme.CA()
    ca.cert_pem.write_to_path(folder / "ca.pem")
    for n, host in (("a", "127.0.0.2"), ("b", "127.0.0.3")):
        cert = ca.issue_cert(f"{n}.example.com", host)
        cert.cert_chain_pems[0].write_to_path(folder / f"{n}.pem")
        cert.private_key_pem.write_to_path(folder / f"{n}.key")
    return folder


async def cluster_ready(database: str, timeout: float = 20.0) -> None:
    """Both nodes publish their node-to-node port and B shares the device's binding."""
    deadline = time.monotonic() + timeout
    conn = await asyncpg.connect(database)
    try:
        while time.monotonic() < deadline:
            ports = await conn.fetchval("SELECT count(*) FROM nodes WHERE port > 0")
            held = await conn.fetchval("SELECT count(*) FROM bindings WHERE node = 'b'")
            if ports == 2 and held == 1:
                await asyncio.sleep(2.5)  # a heartbeat or two: A's view has B's port
                return
            await asyncio.sleep(0.1)
    finally:
        await conn.close()
    raise RuntimeError("the nodes did not publish their ports and binding in time")


@contextlib.contextmanager
def device_at(host: str, port: int, calls: int, work: Path) -> Iterator[None]:
    """A SIPp UAS registered at `host`:`port` from the port it then answers calls on."""
    mine = free_port()
    out = sipp(f"{host}:{port}", REGISTER_UAC, ["-s", "room1", "-au", "room1", "-ap",
               PASSWORD, "-p", str(mine), "-m", "1", "-recv_timeout", "2000"], timeout=10)
    if sipp_counts(out).get("Successful call", 0) != 1:
        raise RuntimeError(f"the device did not register at {host}:{port}:\n{out}")
    cmd = ["sipp", "-sf", str(UAS), "-i", "127.0.0.1", "-p", str(mine), "-m", str(calls),
           "-nostdin", "-timeout", "600s"]
    with running(cmd, cwd=work):
        yield


def latencies(server: Postgres, calls: int, rate: int, turns: int, work: Path
              ) -> dict[str, list[float]]:
    database = server.database()
    times: dict[str, list[float]] = {"direct to B": [], "through A": []}
    folder = links(work)
    a_port, b_port = free_port(), free_port()
    with lyncgate(node_config("b", "127.0.0.3", b_port, database, folder), args=LYNCGATE_ARGS,
                  log=work / "b.log"), \
            lyncgate(node_config("a", "127.0.0.2", a_port, database, folder),
                     args=LYNCGATE_ARGS, log=work / "a.log"):
        wait_udp_answer(b_port, timeout=30, host="127.0.0.3")
        wait_udp_answer(a_port, timeout=30, host="127.0.0.2")
        with device_at("127.0.0.3", b_port, 2 * calls * turns, work):
            asyncio.run(cluster_ready(database))
            for _ in range(turns):
                for name, target in (("direct to B", ("127.0.0.3", b_port)),
                                     ("through A", ("127.0.0.2", a_port))):
                    times[name] += asyncio.run(place_calls(target, calls, rate))
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", nargs="?", choices=("both", "register", "latency"),
                        default="both")
    parser.add_argument("--count", type=int, default=6000, help="REGISTERs per node")
    parser.add_argument("--reg-rate", type=int, default=300, help="REGISTERs per second")
    parser.add_argument("--calls", type=int, default=500, help="calls per path per turn")
    parser.add_argument("--rate", type=int, default=100, help="calls per second")
    parser.add_argument("--turns", type=int, default=3, help="turns of direct and through A")
    args = parser.parse_args()
    if not shutil.which("sipp"):
        print("missing sipp: run scripts/install --test", file=sys.stderr)
        return 2
    with running_postgres() as server, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.part in ("both", "register"):
            found = registers(server, args.count, args.reg_rate, work)
            print(f"REGISTER (Digest, 2 transactions each) over UDP, {args.count} at "
                  f"{args.reg_rate}/s per node")
            rate: dict[str, float] = {}
            for r in found:
                rate[r.name] = r.ok / r.cpu if r.cpu > 0 else float("inf")
                db = f"  PostgreSQL cpu {r.database_cpu:.2f} s" if r.database_cpu else ""
                print(f"  {r.name:21s} cpu {r.cpu:6.2f} s  {rate[r.name]:7.0f} REGISTER/CPU-s"
                      f"  ok {r.ok} failed {r.failed}{db}")
            single, clustered = (rate[r.name] for r in found)
            print(f"  ratio cluster/single: {clustered / single:.2f}x (goal >= 0.5x)")
        if args.part in ("both", "latency"):
            times = latencies(server, args.calls, args.rate, args.turns, work)
            print(f"call set-up INVITE -> 200 to a device held by B, {args.rate} calls/s, "
                  f"{args.turns} turns of {args.calls} calls each way")
            p99: dict[str, float] = {}
            for name, values in times.items():
                if not values:
                    print(f"  {name:12s} no call answered")
                    return 1
                p99[name] = percentile(values, 99)
                print(f"  {name:12s} answered {len(values):5d}  p50 "
                      f"{percentile(values, 50):6.2f} ms  p90 {percentile(values, 90):6.2f} ms"
                      f"  p99 {p99[name]:6.2f} ms  max {max(values):6.2f} ms")
            print(f"  added p99 through A: {p99['through A'] - p99['direct to B']:+.2f} ms "
                  "(goal < 5 ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
