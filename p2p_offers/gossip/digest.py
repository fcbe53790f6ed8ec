"""Anti-entropy by digests: what two nodes compare to find what gossip missed.

What a node holds is, per owner, the highest seq per record key (an offer id).
Records are signed BEP44 versions with a seq, so that map *is* the state: two
nodes agree on an owner exactly when their maps for it are equal, and whoever
has the higher seq for a key has the newer record. No version vectors, no
Merkle trees over payloads.

Comparing whole maps would cost as much as sending the book. So an exchange
goes in two steps, as Komodo's order sync does with its per-pubkey trie roots:

1. one 8-byte digest per owner (a hash of that owner's sorted ``key:seq``
   pairs); only owners whose digests differ go on to
2. the per-key seqs of those owners, from which each side sees what to ask for
   (the peer's seq is higher) and what to send (ours is higher, or it has none).

In the common case (nothing missed) a round costs one digest message per peer,
``~86 bytes x owners``, whatever the number of offers. Digests are cached per
owner and recomputed only when that owner's map changes.

This module is the pure part: the holdings and the comparisons. The messages
that carry them are in ``wire``, the exchange itself in ``router``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping

from sortedcontainers import SortedDict

DIGEST_HEX = 16
EMPTY = hashlib.blake2b(b"", digest_size=DIGEST_HEX // 2).hexdigest()


def owner_digest(held: Mapping[str, int]) -> str:
    """Digest of one owner's map: equal maps, equal digests, whatever the insertion order."""
    h = hashlib.blake2b(digest_size=DIGEST_HEX // 2)
    for key in sorted(held):
        h.update(b"%s:%d\n" % (key.encode(), held[key]))
    return h.hexdigest()


class Holdings:
    """Highest seq held per (owner, key), with a cached digest per owner.

    The node keeps it in step with its book (every version it applies, every
    record it drops); the router reads it for digests and updates it for
    versions it validated.
    """

    def __init__(self) -> None:
        self._owners: SortedDict = SortedDict()  # owner -> dict[key, seq]
        self._digests: dict[str, str] = {}

    def seq(self, owner: str, key: str) -> int | None:
        held = self._owners.get(owner)
        return None if held is None else held.get(key)

    def update(self, owner: str, key: str, seq: int) -> bool:
        """Record that we hold ``seq`` for (owner, key); False (no change) unless newer."""
        held = self._owners.get(owner)
        if held is None:
            held = self._owners[owner] = {}
        elif held.get(key, -1) >= seq:
            return False
        held[key] = seq
        self._digests.pop(owner, None)
        return True

    def forget(self, owner: str, key: str) -> None:
        """We no longer hold the record (expired, evicted): it leaves the digest too."""
        held = self._owners.get(owner)
        if held is None or key not in held:
            return
        del held[key]
        if not held:
            del self._owners[owner]
        self._digests.pop(owner, None)

    def owners(self) -> list[str]:
        return list(self._owners)

    def entries(self, owner: str) -> dict[str, int]:
        return dict(self._owners.get(owner, {}))

    def digest(self, owner: str) -> str:
        cached = self._digests.get(owner)
        if cached is None:
            held = self._owners.get(owner)
            if held is None:
                return EMPTY  # not cached: owners named by a peer must not grow our state
            cached = self._digests[owner] = owner_digest(held)
        return cached

    def page(self, start: str, limit: int) -> tuple[dict[str, str], str | None, str | None]:
        """Digests of up to ``limit`` owners from ``start`` on: (digests, end, next start).

        ``end`` is the last owner covered (None: the page runs to the end of the key
        space, which is what lets the peer see owners we lack there); ``next`` is
        where the following page starts, None after the last page.
        """
        keys = self._owners.keys()
        i = self._owners.bisect_left(start)
        chunk = list(keys[i : i + limit])
        digests = {o: self.digest(o) for o in chunk}
        if i + limit >= len(keys):
            return digests, None, None
        return digests, chunk[-1], keys[i + limit]

    def in_range(self, start: str, end: str | None) -> Iterator[str]:
        lo = self._owners.bisect_left(start)
        hi = len(self._owners) if end is None else self._owners.bisect_right(end)
        return iter(self._owners.keys()[lo:hi])

    def __len__(self) -> int:
        return sum(len(h) for h in self._owners.values())


def differing(
    holdings: Holdings, start: str, end: str | None, theirs: Mapping[str, str]
) -> list[str]:
    """Owners in ``[start, end]`` whose digest differs from the peer's, or that one side lacks."""
    mine = set(holdings.in_range(start, end))
    out = [o for o in sorted(mine | set(theirs)) if theirs.get(o, EMPTY) != holdings.digest(o)]
    return out


def compare(mine: Mapping[str, int], theirs: Mapping[str, int]) -> tuple[list[str], list[str]]:
    """One owner's maps: (keys to request, the peer's seq being higher; keys to send,
    ours being higher or the peer having none)."""
    request = sorted(k for k, s in theirs.items() if s > mine.get(k, -1))
    send = sorted(k for k, s in mine.items() if s > theirs.get(k, -1))
    return request, send
