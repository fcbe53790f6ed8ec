"""Who listens at an address: a signed answer to a fresh challenge, bound to that address.

A node learns the ``client_id`` behind each address the ``p2p_offers:node``
lookup returns by asking it (``identify``), and from then on dials that address
for that id: gossip meant for B, and B's mesh slot, go there. An answer that was
only a claimed id ("I am B") let any address take B's place in our mesh, and a
signature over a nonce alone does not stop that either: the impostor relays our
challenge to B and hands back B's signature. So the proof names the address the
prober dialled, and a node signs only for an address where it listens
(``is_own``): B refuses a challenge relayed from the impostor's address, and a
proof the impostor has B sign for B's own address does not match the address we
dialled. What it does not stop: someone on the path between us and B (who
can forward our request to B unchanged); only a secure channel would.

Pure: no sockets, no clock; ``PeerClient.identify`` asks, ``/peer/identify`` answers.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Collection
from typing import Any

from nacl.signing import SigningKey

from p2p_offers.fields import is_public_key
from p2p_offers.signing import SignatureError, public_hex, sign_doc, verify_doc

KIND = "identify"
CHALLENGE_BYTES = 16


def challenge() -> str:
    """A fresh random challenge (hex): a proof made for an earlier one is worthless."""
    return os.urandom(CHALLENGE_BYTES).hex()


def prove(key: SigningKey, challenge_hex: str, address: str) -> dict[str, str]:
    """The answer to ``challenge_hex`` sent to ``address``: our id and its signature."""
    client_id = public_hex(key)
    doc = {"address": address, "challenge": challenge_hex, "client_id": client_id}
    return {"client_id": client_id, "sig": sign_doc(key, KIND, doc)}


def proven_id(reply: Any, challenge_hex: str, address: str) -> str | None:
    """The client_id ``reply`` proves for our challenge at ``address``, or None."""
    if not isinstance(reply, dict):
        return None
    client_id, sig = reply.get("client_id"), reply.get("sig")
    if not isinstance(client_id, str) or not is_public_key(client_id) or not isinstance(sig, str):
        return None
    doc = {"address": address, "challenge": challenge_hex, "client_id": client_id}
    try:
        verify_doc(client_id, KIND, doc, sig)
    except SignatureError:
        return None
    return client_id


def is_own(address: str, hosts: Collection[str], ports: Collection[int]) -> bool:
    """Whether ``address`` ("host:port") is one this node listens at.

    ``hosts`` empty means the node does not know its own address (it binds every
    interface and announces what its grape sees): then only the port is checked.
    """
    host, sep, port_text = address.rpartition(":")
    if not sep or not port_text.isdigit() or int(port_text) not in ports:
        return False
    return not hosts or _same_host(host.strip("[]"), hosts)


def _same_host(host: str, hosts: Collection[str]) -> bool:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host.lower() in {h.lower() for h in hosts}
    for known in hosts:
        try:
            if ipaddress.ip_address(known.strip("[]")) == ip:
                return True
        except ValueError:
            continue
    return False
