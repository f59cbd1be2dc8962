"""Call flows through `lyncgate run` with real SIPp peers on 127.0.0.1 (issue 7's list): CANCEL
before the answer, BYE from the callee, a refusal relayed, no answer, failover between two
RFC 3263 targets served by dnsmasq, a call to a device that registered, and a call toward a
Lync-style UAS over mutual TLS (stunnel in front of SIPp).

Each test checks what the peers saw (SIPp's exit status: 0 only when every message of the
scenario came as written) and what lyncgate recorded (its JSON log events and CDR rows).
"""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aioice import stun

from tests.daemon.harness import Daemon, committed_cdrs
from tests.kit.nodes import BASE, RULES, mutual_tls_node, with_pki, write_pki
from tests.peers import SCENARIOS, dnsmasq, free_port, need, sipp, stunnel

pytestmark = pytest.mark.peer


def routed_to(destination: str, extra: str = "") -> str:
    """The test rule sending `call-N` to `destination` (`\\1` is N)."""
    return (RULES.replace("match = 'routed'", "match = 'call-(\\d+)'")
            + f"replace = '{destination}'\n" + extra)


def bound(port: int, transport: str = "udp") -> bool:
    """Whether something listens on 127.0.0.1:port (read from /proc, so the listener sees
    no probe it would take for a call)."""
    wanted = f"0100007F:{port:04X}"
    with open(f"/proc/net/{transport}") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            if fields[1] == wanted and (transport == "udp" or fields[3] == "0A"):
                return True
    return False


class Uas:
    """A SIPp UAS in the background on 127.0.0.1:port, bounded by -m and -timeout, its
    messages traced to a file. `status` fills the scenario's @STATUS@; `fill` replaces any
    other text of it."""

    def __init__(self, workdir: Path, scenario: str, port: int, *args: str,
                 status: int | None = None, transport: str = "u1", timeout: int = 15,
                 fill: dict[str, str] | None = None) -> None:
        text = (SCENARIOS / scenario).read_text()
        if status is not None:
            text = text.replace("@STATUS@", str(status))
        for found, wanted in (fill or {}).items():
            text = text.replace(found, wanted)
        path = workdir / f"uas-{port}-{scenario}"
        path.write_text(text)
        self.trace = workdir / f"uas-{port}-messages.log"
        self.proc = subprocess.Popen(
            [need("sipp"), "-sf", str(path), "-i", "127.0.0.1", "-p", str(port), "-t",
             transport, "-m", "1", "-nostdin", "-timeout", f"{timeout}s", "-timeout_error",
             "-trace_msg", "-message_file", str(self.trace), *args],
            cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.output = ""
        deadline = time.monotonic() + 5
        kind = "udp" if transport == "u1" else "tcp"
        while not bound(port, kind):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"SIPp UAS on {port} did not start: {self.output}")
            time.sleep(0.02)

    def wait(self, timeout: float = 15) -> int:
        """SIPp's exit status once its one call is over."""
        self.output, _ = self.proc.communicate(timeout=timeout)
        return self.proc.returncode

    def messages(self) -> str:
        return self.trace.read_text(errors="replace") if self.trace.exists() else ""

    def report(self) -> str:
        return f"{self.output}\n--- messages ---\n{self.messages()[-4000:]}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        if self.proc.stdout is not None and not self.proc.stdout.closed:
            out, _ = self.proc.communicate()
            self.output = out or ""


@pytest.fixture
def lab() -> Iterator[contextlib.ExitStack]:
    """Everything a test starts is entered here and stopped when the test ends, pass or
    fail."""
    with contextlib.ExitStack() as stack:
        yield stack


def start_daemon(lab: contextlib.ExitStack, tmp_path: Path, text: str) -> Daemon:
    daemon = Daemon(tmp_path, text)
    # Without waiting out the drain of a call a failed test left behind.
    lab.callback(daemon.stop, 1.0)
    return daemon


def start_uas(lab: contextlib.ExitStack, tmp_path: Path, scenario: str, port: int,
              *args: str, **kwargs: Any) -> Uas:
    uas = Uas(tmp_path, scenario, port, *args, **kwargs)
    lab.callback(uas.stop)
    return uas


def call(daemon: Daemon, tmp_path: Path, scenario: str, *args: str, alias: str = "call-42",
         status: int | None = None, timeout: float = 10) -> subprocess.CompletedProcess[str]:
    """One call from a SIPp UAC over UDP to the daemon, run to completion."""
    return sipp(f"127.0.0.1:{daemon.udp}", scenario, "-s", alias, "-t", "u1", "-m", "1",
                "-p", str(free_port()), "-trace_msg", "-message_file",
                str(tmp_path / "uac-messages.log"), *args, status=status, timeout=timeout,
                workdir=str(tmp_path))


def routed_call(lab: contextlib.ExitStack, tmp_path: Path, uas_scenario: str,
                uac_scenario: str, *uac_args: str, uas_args: tuple[str, ...] = (),
                status: int | None = None) -> tuple[Daemon, Uas]:
    """The daemon routing `call-N` to a SIPp UAS running `uas_scenario`, and one call from a
    SIPp UAC running `uac_scenario`, which must succeed; the UAS is the caller's to check."""
    uas_port = free_port()
    daemon = start_daemon(lab, tmp_path, BASE + routed_to(f"uas-\\1@127.0.0.1:{uas_port}"))
    uas = start_uas(lab, tmp_path, uas_scenario, uas_port, *uas_args, status=status)
    done = call(daemon, tmp_path, uac_scenario, *uac_args, status=status)
    assert done.returncode == 0, uac_report(done, tmp_path)
    return daemon, uas


def uac_report(done: subprocess.CompletedProcess[str], tmp_path: Path) -> str:
    trace = tmp_path / "uac-messages.log"
    messages = trace.read_text(errors="replace")[-4000:] if trace.exists() else ""
    return f"{done.stdout}{done.stderr}\n--- messages ---\n{messages}"


def received(trace: str, start: str) -> list[str]:
    """The messages a SIPp trace (-trace_msg) shows as received that start with `start`
    (e.g. "INVITE ", "BYE ")."""
    blocks = trace.split("-----------------------------------------------")
    out = []
    for block in blocks:
        if "message received" not in block:
            continue
        text = block.split(":\n\n", 1)[-1].lstrip("\n")
        if text.startswith(start):
            out.append(text)
    return out


def cdr(tmp_path: Path) -> dict[str, Any]:
    """The one CDR row the test's call left."""
    [row] = committed_cdrs(tmp_path)
    return row


# -- CANCEL, BYE, refusals -------------------------------------------------------------------------
def test_caller_cancels_while_the_callee_rings(lab: contextlib.ExitStack,
                                               tmp_path: Path) -> None:
    """CANCEL before the answer (RFC 3261 9): the callee's 180 reaches the caller; the
    caller's CANCEL gets 200 and its INVITE 487; the gateway CANCELs the outbound INVITE,
    the callee answers 200 + 487 and gets the ACK for its 487; the CDR says the caller
    cancelled it and that it rang but was never answered."""
    daemon, uas = routed_call(lab, tmp_path, "uas_ring_cancel.xml", "uac_cancel.xml", "-d",
                              "300")
    assert uas.wait() == 0, uas.report()
    [ended] = daemon.wait_event("call_ended")
    assert ended["reason"] == "cancelled by the caller" and ended["ended_by"] == "caller"
    row = cdr(tmp_path)
    assert row["end_cause"] == "cancelled by the caller" and row["ended_by"] == "caller"
    assert row["ringing"] is not None and row["answered"] is None
    assert row["rule"] == "endpoints" and row["out_call_id"]


def test_callee_hangs_up_and_the_caller_gets_the_bye(lab: contextlib.ExitStack,
                                                     tmp_path: Path) -> None:
    """BYE from the callee: the gateway answers it 200 on the outbound leg and sends its own
    BYE in the inbound dialog, which the caller answers 200; the CDR says the callee ended an
    answered call."""
    daemon, uas = routed_call(lab, tmp_path, "uas_hangs_up.xml", "uac_bye_from_callee.xml",
                              uas_args=("-d", "500"))
    assert uas.wait() == 0, uas.report()
    [ended] = daemon.wait_event("call_ended")
    assert ended["reason"] == "BYE from the callee" and ended["ended_by"] == "callee"
    row = cdr(tmp_path)
    assert row["ended_by"] == "callee" and row["end_cause"] == "BYE from the callee"
    assert row["answered"] is not None and row["ended"] >= row["answered"]


@pytest.mark.parametrize("status", [486, 603])
def test_a_refusal_from_the_callee_is_relayed(lab: contextlib.ExitStack, tmp_path: Path,
                                              status: int) -> None:
    """486 Busy Here / 603 Decline from the callee reach the caller with the same status
    (issue 7: 480/486/603 relayed); the gateway ACKs the callee's final response, and the
    CDR has the status as end cause, ended by the callee."""
    daemon, uas = routed_call(lab, tmp_path, "uas_refuse.xml", "invite_refused_uac.xml",
                              status=status)
    assert uas.wait() == 0, uas.report()
    [ended] = daemon.wait_event("call_ended")
    assert ended["reason"] == f"{status} Refused by SIPp" and ended["ended_by"] == "callee"
    row = cdr(tmp_path)
    assert row["end_cause"] == f"{status} Refused by SIPp" and row["ended_by"] == "callee"
    assert row["answered"] is None


# -- no answer -------------------------------------------------------------------------------------
def test_no_answer_the_gateway_rings_the_caller_itself_until_it_gives_up(
    lab: contextlib.ExitStack, tmp_path: Path
) -> None:
    """A callee that says nothing at all: after 2 s of silence the gateway sends the caller
    a 180 of its own (so a Lync caller does not give up at ~10 s); the caller then gives up,
    its CANCEL gets 200 and its INVITE 487; the CDR says the caller cancelled a call that
    rang (about 2 s after it started) and was never answered. (What the silent callee must
    and must not receive meanwhile is the next test's subject.)"""
    daemon, uas = routed_call(lab, tmp_path, "uas_silent.xml", "uac_cancel.xml", "-d", "300")
    assert received(uas.messages(), "INVITE sip:uas-42@127.0.0.1")  # it got there
    [ended] = daemon.wait_event("call_ended")
    assert ended["reason"] == "cancelled by the caller" and ended["ended_by"] == "caller"
    row = cdr(tmp_path)
    assert row["end_cause"] == "cancelled by the caller" and row["answered"] is None
    assert 1.8 <= float(row["ringing"]) - float(row["started"]) <= 3.0


def test_the_cancel_toward_a_silent_callee_waits_for_its_provisional(
    lab: contextlib.ExitStack, tmp_path: Path
) -> None:
    """RFC 3261 9.1: a client MUST NOT send CANCEL before a provisional response (a CANCEL
    can overtake its INVITE and leave it ringing). The caller gives up while the callee is
    still silent; the callee rings at 3 s; only then does the gateway CANCEL, and it ACKs
    the callee's 487. The caller is not kept waiting for any of it."""
    daemon, uas = routed_call(lab, tmp_path, "uas_silent.xml", "uac_cancel.xml", "-d", "300")
    assert uas.wait() == 0, uas.report()
    assert daemon.wait_event("call_ended")[0]["reason"] == "cancelled by the caller"


# -- failover --------------------------------------------------------------------------------------
def pool(lab: contextlib.ExitStack, records: list[str]) -> str:
    """dnsmasq serving `records` for pool.test; the [global] line pointing lyncgate at it."""
    port = lab.enter_context(dnsmasq(["--local=/test/", *records,
                                      "--host-record=first.pool.test,127.0.0.1",
                                      "--host-record=second.pool.test,127.0.0.1"]))
    return f'\n[global]\ndns_server = "127.0.0.1:{port}"\n'


def test_a_503_from_the_first_srv_target_fails_over_to_the_second(
    lab: contextlib.ExitStack, tmp_path: Path
) -> None:
    """Failover (RFC 3263 4.3, issue 7): the destination pool.test has two SRV targets
    (dnsmasq); the first, by priority, answers 503; the gateway ACKs it and places the call
    on the second, which answers. The caller sees only the 200 (never the 503); the log
    has target_failed with reason 503 for the first target and call_placed for each."""
    first, second = free_port(), free_port()
    dns = pool(lab, [f"--srv-host=_sip._udp.pool.test,first.pool.test,{first},10,0",
                     f"--srv-host=_sip._udp.pool.test,second.pool.test,{second},20,0"])
    daemon = start_daemon(lab, tmp_path, BASE + dns + routed_to("uas-\\1@pool.test"))
    busy = start_uas(lab, tmp_path, "uas_refuse.xml", first, status=503)
    good = start_uas(lab, tmp_path, "uas_hangs_up.xml", second, "-d", "300")
    done = call(daemon, tmp_path, "uac_bye_from_callee.xml")
    assert done.returncode == 0, uac_report(done, tmp_path)
    assert busy.wait() == 0, busy.report()
    assert good.wait() == 0, good.report()
    assert "SIP/2.0 503" not in (tmp_path / "uac-messages.log").read_text()
    [failed] = daemon.wait_event("target_failed")
    assert failed["reason"] == "503" and failed["target"] == f"127.0.0.1:{first}"
    placed = [e["target"] for e in daemon.events("call_placed")]
    assert placed == [f"udp:127.0.0.1:{first}", f"udp:127.0.0.1:{second}"]
    row = cdr(tmp_path)
    assert row["answered"] is not None and row["ended_by"] == "callee"
    assert row["destination"] == "uas-42@pool.test"


def test_a_target_that_refuses_the_connection_fails_over_at_once(
    lab: contextlib.ExitStack, tmp_path: Path
) -> None:
    """A transport error is a failure of that target (RFC 3261 8.1.3.1: treat it as a
    503; RFC 3263 4.3: try the next one): the first SRV target is TCP on a port where
    nothing listens, so the connection is refused at once; the call goes to the second
    target (UDP), well within the 4 s the caller's SIPp is given."""
    dead, second = free_port(), free_port()
    dns = pool(lab, [f"--srv-host=_sip._tcp.pool.test,first.pool.test,{dead},10,0",
                     f"--srv-host=_sip._udp.pool.test,second.pool.test,{second},20,0"])
    daemon = start_daemon(lab, tmp_path, BASE + dns + routed_to("uas-\\1@pool.test"))
    good = start_uas(lab, tmp_path, "uas_hangs_up.xml", second, "-d", "300")
    done = call(daemon, tmp_path, "uac_bye_from_callee.xml", timeout=4)
    assert done.returncode == 0, uac_report(done, tmp_path)
    assert good.wait() == 0, good.report()
    assert daemon.events("target_failed")[0]["target"] == f"127.0.0.1:{dead}"


# -- registration ----------------------------------------------------------------------------------
def test_a_call_to_a_registered_alias_reaches_the_device_that_registered(
    lab: contextlib.ExitStack, tmp_path: Path
) -> None:
    """Registration, then a call (issue 7: registered devices): a rule with target
    registered_only refuses the alias with 480 while nothing is registered; SIPp then
    REGISTERs from port P with Digest; the next call to the alias goes to the binding (the
    Request-URI is the registered Contact, sent where the REGISTER came from) and is
    answered by a SIPp UAS on that same port P (SIPp cannot take an INVITE for a new Call-ID
    in a client scenario, so the registering instance hands the port over)."""
    device = ('\n[[devices]]\nalias = "room12@vc.example.com"\nusername = "room12"\n'
              'password = "s3cret!"\ndigest = ["MD5"]\n')
    rule = routed_to("room\\1@vc.example.com", 'target = "registered_only"\n')
    daemon = start_daemon(lab, tmp_path, BASE + rule + device)
    early = call(daemon, tmp_path, "invite_refused_uac.xml", alias="call-12", status=480)
    assert early.returncode == 0, uac_report(early, tmp_path)
    port = free_port()
    registered = sipp(f"127.0.0.1:{daemon.udp}", "register_uac.xml", "-s", "room12", "-au",
                      "room12", "-ap", "s3cret!", "-m", "1", "-p", str(port), timeout=10,
                      workdir=str(tmp_path))
    assert registered.returncode == 0, registered.stdout + registered.stderr
    contact = f"sip:room12@127.0.0.1:{port};transport=UDP"
    assert daemon.wait_event("registered")[0]["contact"] == contact
    device_uas = start_uas(lab, tmp_path, "uas_hangs_up.xml", port, "-d", "300")
    done = call(daemon, tmp_path, "uac_bye_from_callee.xml", alias="call-12")
    assert done.returncode == 0, uac_report(done, tmp_path)
    assert device_uas.wait() == 0, device_uas.report()
    assert received(device_uas.messages(), f"INVITE {contact} SIP/2.0")
    [placed] = daemon.events("call_placed")
    assert placed["uri"] == contact and placed["target"] == f"udp:127.0.0.1:{port}"
    answered, refused = committed_cdrs(tmp_path, 2)
    assert str(refused["end_cause"]).startswith("480 ") and refused["answered"] is None
    assert "room12@vc.example.com is not registered" in str(refused["end_cause"])
    assert answered["destination"] == "room12@vc.example.com"
    assert answered["answered"] is not None and answered["ended_by"] == "callee"


# -- toward Lync -----------------------------------------------------------------------------------
LYNC_UFRAG, LYNC_PWD = "Lq5d", "uVgO1E5yK0aBjXQ6k8ZbW3mT"  # as in uas_lync_callee.xml


class StunResponder:
    """The Lync client's side of the connectivity checks, which SIPp does not speak: a UDP
    socket on 127.0.0.1 (the candidate the Lync-style UAS answers with) that answers each
    STUN Binding request with a success response signed with the UAS's ice-pwd (RFC 5245
    7.2), and keeps the requests for the test to look at."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = int(self.sock.getsockname()[1])
        self.checks: list[stun.Message] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._done.is_set():
            try:
                data, addr = self.sock.recvfrom(2048)
            except OSError:
                continue
            try:
                request = stun.parse_message(data)
            except ValueError:
                continue  # media, once the relay runs
            if (request.message_method != stun.Method.BINDING
                    or request.message_class != stun.Class.REQUEST):
                continue
            self.checks.append(request)
            answer = stun.Message(stun.Method.BINDING, stun.Class.RESPONSE,
                                  transaction_id=request.transaction_id)
            answer.attributes["XOR-MAPPED-ADDRESS"] = addr
            answer.add_message_integrity(LYNC_PWD.encode())
            self.sock.sendto(bytes(answer), addr)

    def close(self) -> None:
        self._done.set()
        self._thread.join(2)
        self.sock.close()


def lync_lab(lab: contextlib.ExitStack, tmp_path: Path, candidate_port: int | None = None,
             candidate: str | None = None, server: str = "127.0.0.1",
             verify: bool = False, dns_port: int | None = None,
             fill: dict[str, str] | None = None) -> tuple[Daemon, Uas]:
    """lyncgate with a rule toward Lync (`outgoing_protocol = "mssip"`, `call_via` the Lync
    server at `server`), the Lync-style SIPp UAS behind stunnel in server mode, which
    requires the gateway's client certificate (mutual TLS) and presents one for
    fepool.lync.test. The UAS answers with `candidate` (default: a host candidate on
    `candidate_port`), its scenario changed by `fill`. `verify` turns the gateway's own
    certificate checks on."""
    stunnel_port, uas_port = free_port(), free_port()
    text = mutual_tls_node(tmp_path, verify=verify) + f"""
[global]
mssip_domain = "vc.example.com"
{f'dns_server = "127.0.0.1:{dns_port}"' if dns_port else ""}

[[lync_servers]]
name = "fepool"
address = "{server}"
port = {stunnel_port}
transport = "tls"

[[routing_rules]]
name = "SIP to Lync"
priority = 10
protocols = ["sip"]
match = 'lync-(\\d+)'
replace = 'alice\\1@lync.example.com'
outgoing_protocol = "mssip"
call_via = "fepool"
"""
    daemon = start_daemon(lab, tmp_path, text)
    if candidate is None:
        candidate = f"1 1 UDP 2130706431 127.0.0.1 {candidate_port} typ host"
    uas = start_uas(lab, tmp_path, "uas_lync_callee.xml", uas_port, "-key", "ice_port",
                    str(candidate_port or 9), "-key", "candidate", candidate, transport="t1",
                    fill=fill)
    lab.enter_context(stunnel(tmp_path, accept=stunnel_port, connect=uas_port,
                              cert=tmp_path / "lync.pem", client=False))
    return daemon, uas


@pytest.mark.parametrize("hangs_up", ["lync", "caller"])
def test_call_toward_a_lync_style_uas_over_mutual_tls(lab: contextlib.ExitStack,
                                                      tmp_path: Path, hangs_up: str) -> None:
    """A SIP caller -> lyncgate -> a rule with outgoing_protocol = "mssip" -> mutual TLS
    (stunnel verifies the gateway's client certificate) -> a Lync-style SIPp UAS. Pins what
    Lync checks in the INVITE: From in mssip_domain, Contact on node.sip_tls_fqdn with
    transport=tls, an ICE + SRTP offer (ice-ufrag/pwd, host candidates, RTP/SAVP, a=crypto);
    the caller gets plain RTP; the gateway, as controlling agent, checks Lync's candidate
    (ICE-CONTROLLING, USE-CANDIDATE), then sends the second INVITE naming it in
    a=remote-candidates; and BYE works both ways over the TLS connection."""
    stun_peer = StunResponder()
    lab.callback(stun_peer.close)
    daemon, uas = lync_lab(lab, tmp_path, stun_peer.port)
    if hangs_up == "lync":
        done = call(daemon, tmp_path, "uac_bye_from_callee.xml", alias="lync-7")
    else:
        done = call(daemon, tmp_path, "uac_call.xml", "-d", "800", alias="lync-7")
    assert done.returncode == 0, uac_report(done, tmp_path)
    assert uas.wait() == 0, uas.report()
    trace = uas.messages()
    first, second = received(trace, "INVITE ")
    assert first.startswith("INVITE sip:alice7@lync.example.com SIP/2.0")
    assert re.search(r'^From: "?sipp"? <sip:sipp@vc\.example\.com>;tag=', first, re.M), first
    assert f"\nContact: <sip:gw.example.com:{daemon.tls};transport=tls>" in first
    offer = first.split("\n\n", 1)[1]
    assert re.search(r"^m=audio \d+ RTP/SAVP (0|9)$", offer, re.M), offer  # the caller's codec
    assert re.search(r"^a=ice-ufrag:\S+$", offer, re.M) and "a=ice-pwd:" in offer
    assert re.search(r"^a=candidate:\S+ 1 (?i:udp) \d+ 127\.0\.0\.1 \d+ typ host", offer, re.M)
    assert re.search(r"^a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:\S+", offer, re.M)
    assert f"a=remote-candidates:1 127.0.0.1 {stun_peer.port}" in second
    assert "CSeq: 2 INVITE" in second
    # the caller got the relay's plain RTP, with no ICE or keys of Lync's
    uac_trace = (tmp_path / "uac-messages.log").read_text()
    [answer] = [m for m in received(uac_trace, "SIP/2.0 200 OK") if "INVITE" in
                m.split("CSeq:", 1)[1].split("\n", 1)[0]]
    assert re.search(r"^m=audio \d+ RTP/AVP ", answer, re.M), answer
    assert "ice-ufrag" not in answer and "crypto" not in answer
    # ICE: the gateway's checks reached "Lync" as the controlling agent and nominated
    assert stun_peer.checks, "no connectivity check reached the Lync candidate"
    assert all(str(c.attributes["USERNAME"]).startswith(f"{LYNC_UFRAG}:")
               for c in stun_peer.checks)
    assert all("ICE-CONTROLLING" in c.attributes for c in stun_peer.checks)
    assert any("USE-CANDIDATE" in c.attributes for c in stun_peer.checks)
    assert daemon.wait_event("ice_connected")[0]["role"] == "controlling"
    byes = received(trace, "BYE ") if hangs_up == "caller" else received(
        (tmp_path / "uac-messages.log").read_text(), "BYE ")
    assert len(byes) == 1
    who = "caller" if hangs_up == "caller" else "callee"
    [ended] = daemon.wait_event("call_ended")
    assert ended["reason"] == f"BYE from the {who}" and ended["ended_by"] == who
    row = cdr(tmp_path)
    assert row["rule"] == "SIP to Lync" and row["ended_by"] == who and row["answered"]


def test_ice_toward_lync_failing_ends_the_call_on_both_legs(lab: contextlib.ExitStack,
                                                           tmp_path: Path) -> None:
    """When ICE toward Lync cannot run, here because Lync answers with TCP candidates only
    (the gateway's ICE is UDP), the gateway, which has already answered the caller, hangs up
    both legs itself: a BYE to the caller and one to Lync over the TLS connection, each
    with a Reason header saying why, and a CDR ended by the gateway with that reason. (A
    UDP candidate that never answers ends the same way, but only after the 15 s ICE timeout,
    which the config cannot shorten: too slow for this suite.)"""
    daemon, uas = lync_lab(lab, tmp_path, candidate="1 1 TCP-PASS 2130706431 127.0.0.1 9 "
                                                    "typ host")
    done = call(daemon, tmp_path, "uac_bye_from_callee.xml", alias="lync-7")
    assert done.returncode == 0, uac_report(done, tmp_path)
    assert uas.wait() == 0, uas.report()
    assert len(received(uas.messages(), "INVITE ")) == 1  # no second INVITE without ICE
    why = "ICE toward Lync failed: no remote candidate we can use"
    [to_lync] = received(uas.messages(), "BYE ")
    [to_caller] = received((tmp_path / "uac-messages.log").read_text(), "BYE ")
    for bye in (to_lync, to_caller):
        assert re.search(rf'^Reason: SIP;cause=200;text="{why}', bye, re.M), bye
    assert daemon.wait_event("ice_failed")[0]["reason"].startswith(
        "no remote candidate we can use (skipped TCP-PASS candidate 127.0.0.1:9)")
    [ended] = daemon.wait_event("call_ended")
    assert ended["reason"].startswith(why) and ended["ended_by"] == "gateway"
    row = cdr(tmp_path)
    assert str(row["end_cause"]).startswith(why) and row["ended_by"] == "gateway"
    assert row["answered"] is not None


def test_tls_toward_lync_checks_the_server_certificate_against_its_fqdn(
    lab: contextlib.ExitStack, tmp_path: Path
) -> None:
    """With verify_mode = "on", the Lync server named by its FQDN (fepool.lync.test, an A
    record served by dnsmasq) must present a certificate for that name, and one that does
    is accepted: RFC 5922 4.1 checks the server's identity against the domain the client
    looked up, not against the IP address it resolved to. The call is placed over that TLS
    connection and connects."""
    dns_port = lab.enter_context(dnsmasq(["--local=/test/",
                                          "--host-record=fepool.lync.test,127.0.0.1"]))
    stun_peer = StunResponder()
    lab.callback(stun_peer.close)
    daemon, uas = lync_lab(lab, tmp_path, stun_peer.port, server="fepool.lync.test",
                           verify=True, dns_port=dns_port)
    done = call(daemon, tmp_path, "uac_bye_from_callee.xml", alias="lync-7", timeout=4)
    assert not daemon.events("connect_failed"), daemon.events("connect_failed")
    assert done.returncode == 0, uac_report(done, tmp_path)
    assert uas.wait() == 0, uas.report()
    assert daemon.events("call_placed")[0]["target"].startswith("tls:127.0.0.1:")
    assert cdr(tmp_path)["ended_by"] == "callee"


# The SIP side's answer gains H264 video beside the scenario's audio.
PHONE_VIDEO = {"      a=rtpmap:9 G722/8000\n": (
    "      a=rtpmap:9 G722/8000\n      m=video [media_port+2] RTP/AVP 122\n"
    "      a=rtpmap:122 H264/90000\n"
    "      a=fmtp:122 profile-level-id=42e01f;packetization-mode=1\n")}


def test_lync_video_over_mutual_tls_reaches_the_sip_side_as_h264(lab: contextlib.ExitStack,
                                                                 tmp_path: Path) -> None:
    """Lync 2013's multipart offer (X-H264UC + x-rtvc1 video, the SIPp scenario) over
    mutual TLS (stunnel presents the pool's client certificate) -> lyncgate -> a SIP UAS
    over UDP: the UAS is offered H264 (packetization-mode 1, constrained baseline) with no
    X-H264UC, x-rtvc1 or Lync attributes; its H264 answer makes the 200 OK to Lync accept
    video as X-H264UC with Lync's attributes. (The SIPp "client" runs no ICE, so the CDR
    says video was negotiated but never came up.)"""
    write_pki(tmp_path)
    uas_port, accept = free_port(), free_port()
    routed = BASE + routed_to(f"uas-\\1@127.0.0.1:{uas_port}")
    text = with_pki(routed, tmp_path, verify=True).replace(
        'protocols = ["sip"]', 'protocols = ["sip", "mssip"]').replace(
        "match = 'call-(\\d+)'", "match = 'call-(\\d+)@vc\\.lab\\.test'")
    daemon = start_daemon(lab, tmp_path, text)
    uas = start_uas(lab, tmp_path, "uas_rr.xml", uas_port, fill=PHONE_VIDEO)
    lab.enter_context(stunnel(tmp_path, accept=accept, connect=daemon.tls,
                              cert=tmp_path / "lync.pem", check_host="gw.example.com"))
    trace = tmp_path / "lync-messages.log"
    done = sipp(f"127.0.0.1:{accept}", "lync_multipart_uac.xml", "-s", "call-7", "-t", "t1",
                "-m", "1", "-p", str(free_port()), "-trace_msg", "-message_file", str(trace),
                workdir=str(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert uas.wait() == 0, uas.report()
    [offer] = received(uas.messages(), "INVITE ")
    assert re.search(r"^m=video \d+ RTP/AVP 122$", offer, re.M), offer
    assert "a=fmtp:122 profile-level-id=42e028;packetization-mode=1" in offer
    for lync_only in ("X-H264UC", "x-rtvc1", "x-ulpfecuc", "x-ssrc-range", "x-caps",
                      "label:", "SILK", "ice-ufrag"):
        assert lync_only not in offer, offer
    [ok] = [m for m in received(trace.read_text(errors="replace"), "SIP/2.0 200 OK")
            if "INVITE" in m.split("CSeq:", 1)[1].split("\n", 1)[0]]
    video = ok.split("m=video", 1)[1]
    assert re.match(r" [1-9]\d* RTP/SAVP 122\n", video), ok
    for wanted in ("a=rtpmap:122 X-H264UC/90000", "a=fmtp:122 packetization-mode=1",
                   "a=rtcp-fb:* x-message app send:src,x-pli recv:src,x-pli",
                   "a=rtcp-rsize", "a=label:main-video", "a=x-ssrc-range:",
                   "a=x-caps:122 263:1280:720:30.0:", "a=ice-ufrag:", "a=crypto:"):
        assert wanted in video, ok
    assert daemon.events("tls_accepted")[0]["client_cert"] is True
    row = cdr(tmp_path)
    assert row["video"] == "not up: 1280x720 negotiated, ICE never completed", row


def test_h264_toward_a_lync_callee_over_mutual_tls_is_offered_as_x_h264uc(
        lab: contextlib.ExitStack, tmp_path: Path) -> None:
    """A SIP caller's H264 (packetization-mode 1) -> lyncgate -> mutual TLS -> a Lync-style
    UAS: the INVITE to Lync offers video as X-H264UC alone with Lync's attributes (x-caps
    for what the caller takes, our SSRC range, source requests and PLI); the UAS answers
    X-H264UC as Lync 2013 does, ICE runs on both streams against it, and the caller's 200
    OK has the video as H264 at the caller's own number and level. The CDR says video was
    negotiated at the size the caller's level allows, and that no frame flowed."""
    stun_peer = StunResponder()
    lab.callback(stun_peer.close)
    lync_video = {"      a=ptime:20\n": (
        "      a=ptime:20\n      m=video [ice_port] RTP/SAVP 122\n"
        "      a=x-ssrc-range:2032261889-2032261988\n"
        "      a=rtcp-fb:* x-message app send:src,x-pli recv:src,x-pli\n"
        "      a=rtcp-rsize\n      a=label:main-video\n      a=x-source:main-video\n"
        "      a=ice-ufrag:Lq5d\n      a=ice-pwd:uVgO1E5yK0aBjXQ6k8ZbW3mT\n"
        "      a=candidate:[candidate]\n      a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:"
        "mD4w0ScRvR0fEQDFIiD6eqWIWfDN3hSxjeo1ADuK|2^31|1:1\n      a=rtcp-mux\n"
        "      a=rtpmap:122 X-H264UC/90000\n"
        "      a=fmtp:122 packetization-mode=1;mst-mode=NI-TC\n")}
    daemon, uas = lync_lab(lab, tmp_path, stun_peer.port, fill=lync_video)
    caller_video = {"      a=rtpmap:0 PCMU/8000\n": (
        "      a=rtpmap:0 PCMU/8000\n      m=video [media_port+2] RTP/AVP 109\n"
        "      a=rtpmap:109 H264/90000\n"
        "      a=fmtp:109 profile-level-id=42e01f;packetization-mode=1\n")}
    done = sipp(f"127.0.0.1:{daemon.udp}", "uac_bye_from_callee.xml", "-s", "lync-7", "-t",
                "u1", "-m", "1", "-p", str(free_port()), "-trace_msg", "-message_file",
                str(tmp_path / "uac-messages.log"), workdir=str(tmp_path), fill=caller_video)
    assert done.returncode == 0, uac_report(done, tmp_path)
    assert uas.wait() == 0, uas.report()
    first = received(uas.messages(), "INVITE ")[0]
    video = first.split("m=video", 1)[1]
    assert re.match(r" [1-9]\d* RTP/SAVP 122\n", video), first
    for wanted in ("a=rtpmap:122 X-H264UC/90000", "a=fmtp:122 packetization-mode=1",
                   "a=rtcp-fb:* x-message app send:src,x-pli recv:src,x-pli",
                   "a=rtcp-rsize", "a=label:main-video", "a=x-ssrc-range:",
                   "a=x-caps:122 263:1280:720:30.0:", "a=x-mediabw:main-video send=",
                   "a=ice-ufrag:", "a=crypto:", "a=rtcp-mux"):
        assert wanted in video, first
    assert "H264/90000" not in video and "a=rtpmap:109" not in video
    [answer] = [m for m in received((tmp_path / "uac-messages.log").read_text(),
                                    "SIP/2.0 200 OK")
                if "INVITE" in m.split("CSeq:", 1)[1].split("\n", 1)[0]]
    to_caller = answer.split("m=video", 1)[1]
    assert re.match(r" [1-9]\d* RTP/AVP 109\n", to_caller), answer
    assert "a=fmtp:109 profile-level-id=42e01f;packetization-mode=1" in to_caller
    assert "X-H264UC" not in answer and "x-ssrc-range" not in answer
    assert daemon.wait_event("ice_connected")[0]["streams"] == 2
    # SIPp sends no video: the CDR says so, with the VSRs that asked Lync for it.
    assert cdr(tmp_path)["video"].startswith(
        "not up: no frames either way (1280x720 negotiated); VSRs "), cdr(tmp_path)
