"""What a node knows of the cluster's nodes, from the nodes table as last read: which are
alive, and how many calls the others of a location carry. Pure: rows in, answers out."""

from __future__ import annotations

from dataclasses import dataclass, field

# A node that missed this many heartbeats in a row is gone.
MISSED_HEARTBEATS = 3


@dataclass(frozen=True, slots=True)
class NodeRow:
    name: str
    address: str
    location: str
    version: str
    load: int
    heartbeat_seconds: int
    heartbeat: float  # Unix time of its last heartbeat
    started: float
    state: str  # up | gone
    config_generation: int
    port: int = 0  # its node-to-node SIP listener (mutual TLS) at `address`; 0: none

    def to_json(self, now: float) -> dict[str, object]:
        return {"name": self.name, "address": self.address, "location": self.location,
                "version": self.version, "load": self.load, "state": self.state,
                "heartbeat_age": round(max(0.0, now - self.heartbeat), 3),
                "config_generation": self.config_generation, "port": self.port}


@dataclass(slots=True)
class ClusterView:
    me: str
    nodes: dict[str, NodeRow] = field(default_factory=dict)

    def replace(self, rows: list[NodeRow]) -> None:
        self.nodes = {row.name: row for row in rows}

    def alive(self, name: str) -> bool:
        """This node always; another while the table says it is up."""
        if name in ("", self.me):
            return True
        row = self.nodes.get(name)
        return row is not None and row.state == "up"

    def link(self, name: str) -> tuple[str, int] | None:
        """Where another live node takes calls from the others (its node-to-node listener);
        None for this node, a node gone, or one that takes none."""
        row = self.nodes.get(name)
        if name == self.me or row is None or row.state != "up" or not row.port:
            return None
        return row.address, row.port

    def at(self, host: str) -> str | None:
        """The other node whose address is `host` (whose node-to-node link a call came on)."""
        return next((row.name for row in self.nodes.values()
                     if row.address == host and row.name != self.me), None)

    def is_link(self, host: str, port: int) -> bool:
        """Whether host:port is another node's node-to-node listener (gone or not: a call
        in progress toward it keeps its connection's trust)."""
        return any(row.address == host and row.port == port and row.name != self.me
                   for row in self.nodes.values())

    def elsewhere(self, location: str) -> int:
        """Calls in progress on the other live nodes of `location`."""
        return sum(row.load for row in self.nodes.values()
                   if row.name != self.me and row.state == "up" and row.location == location)
