"""The grape's routing table and the checks on contacts that arrive in datagrams.

Contacts come from peers' replies, so nothing about them is trusted: an id must
be 20 bytes, an address an IP (a host name would make us resolve it) and a port
in range; anything else is dropped rather than failing the whole reply.
"""

from __future__ import annotations

import functools
import heapq
import ipaddress

from kademlia.node import Node
from kademlia.routing import RoutingTable

from p2p_offers.grape.storage import TARGET_BYTES


def is_id(value: object) -> bool:
    return isinstance(value, bytes) and len(value) == TARGET_BYTES


def parse_nodes(value: object, exclude: bytes) -> list[Node]:
    """Contacts from a peer's reply; anything that is not (20-byte id, ip, port) is ignored."""
    if not isinstance(value, list):
        return []
    nodes = []
    for item in value[:64]:
        if (
            isinstance(item, list | tuple)
            and len(item) == 3
            and is_id(item[0])
            and item[0] != exclude
            and isinstance(item[1], str)
            and is_ip(item[1])
            and type(item[2]) is int
            and 0 < item[2] < 65536
        ):
            nodes.append(Node(item[0], item[1], item[2]))
    return nodes


@functools.lru_cache(maxsize=4096)
def is_loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False


@functools.lru_cache(maxsize=4096)
def is_ip(text: str) -> bool:
    """Only IP addresses: a host name from a peer would make us resolve it, or fail to send."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


class GrapeRoutingTable(RoutingTable):
    """Upstream's table; ``find_neighbors`` (run by every handler) ranks all contacts in one
    pass instead of walking buckets through a generator and comparing addresses per node."""

    def contacts(self) -> list[Node]:
        return [node for bucket in self.buckets for node in bucket.nodes.values()]

    def find_neighbors(
        self, node: Node, k: int | None = None, exclude: Node | None = None
    ) -> list[Node]:
        """The k contacts closest to ``node`` (never ``node`` itself nor ``exclude``'s address)."""
        self.buckets[self.get_bucket_for(node)].touch_last_updated()  # as upstream: not lonely
        target = node.long_id
        candidates = [
            c
            for c in self.contacts()
            if c.id != node.id and (exclude is None or not c.same_home_as(exclude))
        ]
        return heapq.nsmallest(k or self.ksize, candidates, key=lambda c: c.long_id ^ target)
