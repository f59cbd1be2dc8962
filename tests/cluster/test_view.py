"""ClusterView on its own: which nodes are alive, where another node takes calls from the
others (its node-to-node listener), which node an address is, and the calls of a location
elsewhere."""

from __future__ import annotations

from gateway.cluster.view import ClusterView, NodeRow


def row(name: str, address: str, *, state: str = "up", port: int = 5071, load: int = 0,
        location: str = "London") -> NodeRow:
    return NodeRow(name, address, location, "0.1", load, 2, 0.0, 0.0, state, 0, port)


def test_links_lead_to_live_nodes_with_a_listener_only() -> None:
    view = ClusterView("a")
    view.replace([row("a", "10.0.0.1"), row("b", "10.0.0.2"), row("c", "10.0.0.3", port=0),
                  row("d", "10.0.0.4", state="gone")])
    assert view.link("b") == ("10.0.0.2", 5071)
    assert view.link("a") is None  # this node's devices are reached directly
    assert view.link("c") is None and view.link("d") is None and view.link("x") is None
    assert view.alive("") and view.alive("a") and not view.alive("d")


def test_an_address_names_the_other_node_and_its_listener() -> None:
    view = ClusterView("a")
    view.replace([row("a", "10.0.0.1"), row("b", "10.0.0.2"), row("d", "10.0.0.4",
                                                                  state="gone")])
    assert view.at("10.0.0.2") == "b" and view.at("10.0.0.1") is None
    assert view.is_link("10.0.0.2", 5071) and not view.is_link("10.0.0.2", 5060)
    assert view.is_link("10.0.0.4", 5071)  # a call in progress keeps its connection's trust
    assert not view.is_link("10.0.0.1", 5071)


def test_calls_elsewhere_count_the_live_others_of_the_location() -> None:
    view = ClusterView("a")
    view.replace([row("a", "1", load=5), row("b", "2", load=3), row("c", "3", load=4,
                                                                    location="Paris"),
                  row("d", "4", load=7, state="gone")])
    assert view.elsewhere("London") == 3 and view.elsewhere("Paris") == 4
