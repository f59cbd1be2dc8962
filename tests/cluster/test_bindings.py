"""SharedBindings on its own: this node's devices are routed over their flows and found by
contact for a forwarded call; another node's go to that node's node-to-node listener over
TLS while it is alive, and nowhere once it is gone; a newer registration elsewhere takes a
contact over."""

from __future__ import annotations

from gateway.calls.registrar import Binding
from gateway.cluster.bindings import SharedBindings
from gateway.cluster.view import ClusterView, NodeRow
from gateway.transport.peer import Transport

AOR, CONTACT = "room1@vc.example.com", "sip:room1@192.0.2.1:5999;transport=tcp"


def store(state: str = "up") -> SharedBindings:
    view = ClusterView("a")
    view.replace([NodeRow("b", "10.0.0.2", "", "0.1", 0, 2, 0.0, 0.0, state, 0, 5071)])
    return SharedBindings(None, view)


def test_own_bindings_go_over_their_flow_and_are_found_by_contact() -> None:
    shared = store()
    shared.save(Binding(AOR, CONTACT, 1000.0, "TCP", "127.0.0.1", 40000, "c", 1))
    [own] = shared.lookup(AOR, 0.0)
    target = shared.route(own)
    assert target is not None
    assert (target.transport, target.address, target.port) == (Transport.TCP, "127.0.0.1",
                                                                40000)
    assert shared.held(CONTACT, 0.0) == own and shared.held(CONTACT, 1000.0) is None
    shared.remove(AOR)
    assert shared.held(CONTACT, 0.0) is None


def test_another_nodes_binding_goes_through_its_listener_while_it_lives() -> None:
    live, gone = store(), store("gone")
    for shared in (live, gone):
        shared.learned(Binding(AOR, CONTACT, 1000.0, "TCP", "192.0.2.9", 1234, "c", 1, "b"))
    [theirs] = live.lookup(AOR, 0.0)
    target = live.route(theirs)
    assert target is not None
    assert (target.transport, target.address, target.port) == (Transport.TLS, "10.0.0.2",
                                                               5071)
    assert live.held(CONTACT, 0.0) is None
    assert gone.lookup(AOR, 0.0) == []
    assert gone.route(theirs) is None


def test_a_newer_registration_elsewhere_takes_the_contact_over() -> None:
    shared = store()
    shared.save(Binding(AOR, CONTACT, 500.0, "TCP", "127.0.0.1", 40000, "c", 1))
    shared.learned(Binding(AOR, CONTACT, 900.0, "TCP", "192.0.2.9", 1234, "c", 2, "b"))
    assert shared.held(CONTACT, 0.0) is None
    assert [b.node for b in shared.lookup(AOR, 0.0)] == ["b"]
