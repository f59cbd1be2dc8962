"""An independent ICE agent for tests: libnice through GObject introspection.

Runs under Debian's /usr/bin/python3 (python3-gi, gir1.2-nice-0.1), not the project's venv.
Talks JSON lines on stdin/stdout:
  out  {"ufrag", "pwd", "candidates": ["candidate:..."], "media": port}   after gathering
  in   {"ufrag", "pwd", "candidates": [...], "media": port}                 the peer's
  out  {"state": "ready"|"failed", "seconds": checks start -> ready, "pair": [local, remote]}
then, until stdin closes, carries media: every datagram received on the selected pair goes
to the parent's "media" UDP port on 127.0.0.1, and every datagram the parent sends to ours
goes out on the pair (a test's Lync endpoint or A/V MCU does its SRTP on top).
tests/kit/nice.py runs it.
"""

import argparse
import ctypes
import json
import socket
import sys
import threading
import time

import gi

gi.require_version("Nice", "0.1")
from gi.repository import GLib, Nice  # noqa: E402

COMPAT = {"rfc5245": Nice.Compatibility.RFC5245, "oc2007r2": Nice.Compatibility.OC2007R2}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--controlling", type=int, default=0)
    parser.add_argument("--compat", choices=COMPAT, default="rfc5245")
    parser.add_argument("--address", default="127.0.0.1")
    # Ta, the interval between libnice's own checks (its first one included); 0: libnice's.
    parser.add_argument("--pacing-ms", type=int, default=0)
    args = parser.parse_args()
    loop = GLib.MainLoop()
    context = loop.get_context()
    agent = Nice.Agent.new(context, COMPAT[args.compat])
    agent.set_property("controlling-mode", bool(args.controlling))
    agent.set_property("upnp", False)
    agent.set_property("ice-tcp", False)
    if args.pacing_ms:
        agent.set_property("stun-pacing-timer", args.pacing_ms)
    address = Nice.Address()
    address.set_from_string(args.address)
    agent.add_local_address(address)
    stream = agent.add_stream(1)
    media = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    media.bind(("127.0.0.1", 0))
    media.setblocking(False)
    parent: list[tuple[str, int]] = []  # where received media goes
    started = [0.0]
    reported = [False]
    ready: list[float | None] = [None]

    def emit(obj: dict) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    def on_gathered(agent: Nice.Agent, stream_id: int) -> None:
        _ok, ufrag, pwd = agent.get_local_credentials(stream_id)
        lines = [agent.generate_local_candidate_sdp(c).removeprefix("a=")
                 for c in agent.get_local_candidates(stream_id, 1)]
        emit({"ufrag": ufrag, "pwd": pwd, "candidates": lines,
              "media": media.getsockname()[1]})
        threading.Thread(target=read_remote, daemon=True).start()

    def read_remote() -> None:
        line = sys.stdin.readline()
        if not line:
            GLib.idle_add(loop.quit)
            return
        remote = json.loads(line)
        GLib.idle_add(apply_remote, remote)
        for _ in sys.stdin:
            pass
        GLib.idle_add(loop.quit)

    def apply_remote(remote: dict) -> bool:
        parent.append(("127.0.0.1", int(remote["media"])))
        agent.set_remote_credentials(stream, remote["ufrag"], remote["pwd"])
        candidates = []
        for value in remote["candidates"]:
            c = agent.parse_remote_candidate_sdp(stream, "a=" + value)
            if c is not None:
                candidates.append(c)
        started[0] = time.monotonic()
        agent.set_remote_candidates(stream, 1, candidates)
        return False

    def on_state(agent: Nice.Agent, stream_id: int, component: int, state: int) -> None:
        if reported[0]:
            return
        if state == Nice.ComponentState.READY:
            ready[0] = time.monotonic() - started[0]
            report_ready()
        elif state == Nice.ComponentState.FAILED:
            reported[0] = True
            emit({"state": "failed", "seconds": time.monotonic() - started[0]})

    # nice_agent_attach_recv is not introspectable, and libnice reads a component's socket
    # only once a receive callback is attached: attach one through ctypes.
    lib = ctypes.CDLL("libnice.so.10")
    ctypes.pythonapi.PyCapsule_GetPointer.restype = ctypes.c_void_p
    ctypes.pythonapi.PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    pointer = ctypes.pythonapi.PyCapsule_GetPointer(agent.__gpointer__, None)
    recv_func = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint,
                                 ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p)
    lib.nice_agent_send.argtypes = [ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint,
                                    ctypes.c_uint, ctypes.c_char_p]

    def received(_agent, _stream_id, _component, length, buf, _data):  # type: ignore[no-untyped-def]
        if parent:  # else it came before the peer's line: nowhere to go yet
            media.sendto(ctypes.string_at(buf, length), parent[0])

    def to_send(_fd: int, _condition: int) -> bool:
        # Before a pair is selected libnice drops what it is given, as a real MCU's would be.
        while True:
            try:
                data = media.recv(65536)
            except BlockingIOError:
                return True
            lib.nice_agent_send(pointer, stream, 1, len(data), data)

    lib.nice_agent_attach_recv.argtypes = [ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint,
                                           ctypes.c_void_p, recv_func, ctypes.c_void_p]
    callback = recv_func(received)

    selected: list[str] = []

    def on_pair(agent: Nice.Agent, stream_id: int, component: int, local: Nice.Candidate,
                remote: Nice.Candidate) -> None:
        selected[:] = [f"{c.addr.dup_string()}:{c.addr.get_port()}" for c in (local, remote)]
        report_ready()

    def report_ready() -> None:
        # READY and the selected-pair signal come in either order; report once both came.
        if ready[0] is not None and selected and not reported[0]:
            reported[0] = True
            emit({"state": "ready", "seconds": ready[0], "pair": selected[:]})

    agent.connect("new-selected-pair-full", on_pair)
    agent.connect("candidate-gathering-done", on_gathered)
    agent.connect("component-state-changed", on_state)
    lib.nice_agent_attach_recv(pointer, stream, 1, None, callback, None)  # default context
    GLib.io_add_watch(media.fileno(), GLib.PRIORITY_DEFAULT, GLib.IOCondition.IN, to_send)
    agent.gather_candidates(stream)
    loop.run()


if __name__ == "__main__":
    main()
