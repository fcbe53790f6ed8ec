"""What one DHT node holds: validated BEP44 records and expiring service announcements.

kademlia's ``ForgetfulStorage`` stores whatever a peer sends and resets an item's
age on every store, so a stale or forged value planted once is served and
republished forever (upstream issue #107). ``RecordStorage`` is the one gate
every write goes through, whichever kademlia path it comes from: a value is kept
only if it decodes as a record, its signature verifies, it lives at its own
target and BEP44's write rules (rising seq, cas) allow it.

Lifetimes travel with the data: each write says how long the writer wants the
item to live, and a holder never extends an item beyond that. A client's put
asks for the full TTL; a republish or hand-off passes on what is left, so
copying a record around never keeps it alive — only its writer can.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from kademlia.storage import IStorage

from p2p_offers import records
from p2p_offers.fields import is_seconds
from p2p_offers.records import Record, RecordError

log = logging.getLogger(__name__)

STORAGE_FULL = 202  # BEP5's "server error": this node takes no new keys
TARGET_BYTES = 20
DEFAULT_RECORD_TTL = 2 * 3600.0  # BEP44: items expire after 2 h unless re-put


@dataclass(slots=True)
class Entry:
    record: Record
    value: bytes  # the encoded form, served as is
    expires: float
    touched: float  # last time anyone stored it: drives republishing, not expiry


class RecordStorage(IStorage):
    """kademlia ``IStorage`` keyed by 20-byte targets, holding encoded ``Record`` bytes."""

    def __init__(
        self,
        ttl: float = DEFAULT_RECORD_TTL,
        max_records: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.max_records = max_records
        self.clock = clock
        self._entries: dict[bytes, Entry] = {}

    # -- the write gate --------------------------------------------------------------------

    def accept(
        self, key: bytes, value: bytes, cas: int | None = None, ttl: float | None = None
    ) -> Record:
        """Decode, verify and store ``value`` at ``key``, or raise RecordError (BEP44 code)."""
        if not isinstance(key, bytes) or len(key) != TARGET_BYTES:
            raise RecordError(records.MALFORMED, "key must be a 20-byte target")
        if not isinstance(value, bytes):
            raise RecordError(records.MALFORMED, "value must be bytes")
        record = Record.decode(value)
        record.verify()
        if record.target != key:
            raise RecordError(records.MALFORMED, "record does not live at this target")
        self.admit(record, value, cas, ttl)
        return record

    def admit(
        self, record: Record, value: bytes, cas: int | None = None, ttl: float | None = None
    ) -> None:
        """Apply BEP44's write rules to an already verified record.

        ``ttl`` None means "keep what is left" (a copy of a known item gets no extra
        life; a new item gets the full TTL), otherwise it is capped at our own TTL.
        """
        now = self.clock()
        key = record.target
        current = self._live(key, now)
        records.check_update(current.record if current else None, record, cas)
        life = _life(ttl, self.ttl)
        if current is not None and current.record == record:
            if ttl is not None:
                current.expires = max(current.expires, now + life)
            current.touched = now
            return
        if current is None and len(self._entries) >= self.max_records:
            self.cull()
            if len(self._entries) >= self.max_records:
                raise RecordError(STORAGE_FULL, "storage full")
        self._entries[key] = Entry(record, value, now + life, now)

    def __setitem__(self, key: bytes, value: bytes) -> None:
        """kademlia's own write paths (local set, republish, hand-off) land here: same gate.

        IStorage offers no way to report a refusal, so an invalid or stale value is
        dropped silently rather than stored.
        """
        try:
            self.accept(key, value)
        except RecordError as exc:
            log.debug("dropped store of %s: %s", _hex(key), exc.message)

    # -- reads ---------------------------------------------------------------------------

    def record(self, key: bytes) -> Record | None:
        entry = self._live(key, self.clock())
        return entry.record if entry else None

    def get(self, key: bytes, default: bytes | None = None) -> bytes | None:
        entry = self._live(key, self.clock()) if isinstance(key, bytes) else None
        return entry.value if entry else default

    def __getitem__(self, key: bytes) -> bytes:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        return isinstance(key, bytes) and self.get(key) is not None

    def __len__(self) -> int:
        self.cull()
        return len(self._entries)

    def __iter__(self) -> Iterator[tuple[bytes, bytes]]:
        return iter([(key, value) for key, value, _ in self.items()])

    def items(self, older_than: float = 0.0) -> list[tuple[bytes, bytes, float]]:
        """(key, value, seconds left) of live items nobody stored for ``older_than`` seconds.

        What a republish or a hand-off sends: the seconds left go along, so the
        receiver keeps the item no longer than we would.
        """
        now = self.clock()
        self.cull()
        cutoff = now - older_than
        return [
            (k, e.value, e.expires - now) for k, e in self._entries.items() if e.touched <= cutoff
        ]

    def iter_older_than(self, seconds_old: float) -> list[tuple[bytes, bytes]]:
        """kademlia's republish selector: only items nobody stored for ``seconds_old``."""
        return [(key, value) for key, value, _ in self.items(seconds_old)]

    def cull(self) -> None:
        now = self.clock()
        for key in [k for k, e in self._entries.items() if e.expires <= now]:
            del self._entries[key]

    def _live(self, key: bytes, now: float) -> Entry | None:
        entry = self._entries.get(key)
        if entry is not None and entry.expires <= now:
            del self._entries[key]
            return None
        return entry


@dataclass(slots=True)
class Announcement:
    expires: float
    origin: str | None  # the announcer's address as the first grape saw it (None: not known)
    own: bool  # the announced host is the announcer itself, not a third party


class PeerTable:
    """Service announcements: name key -> {"host:port": Announcement}, each with its own TTL.

    Like BitTorrent's announce_peer, a store adds one address to a set instead of
    replacing a value, so concurrent announcers never overwrite each other.

    Bounded in keys, in peers per key and in what one announcer may put into one
    name: an announcer (the address the first grape saw the request come from)
    holds at most ``own_per_announcer`` entries for its own host (its ports: nodes
    of one machine or NAT) and ``third_party_per_announcer`` for other hosts, and
    its own further entries replace its oldest ones. Entries a host announced for
    itself come first in lookups and are never evicted by third-party ones: one
    client announcing 1,100 made-up hosts used to push the genuine entries out.
    """

    def __init__(
        self,
        ttl: float = 120.0,
        max_keys: int = 100_000,
        max_peers: int = 1000,
        clock: Callable[[], float] = time.monotonic,
        own_per_announcer: int = 64,
        third_party_per_announcer: int = 16,
    ) -> None:
        self.ttl = ttl
        self.max_keys = max_keys
        self.max_peers = max_peers
        self.own_per_announcer = own_per_announcer
        self.third_party_per_announcer = third_party_per_announcer
        self.clock = clock
        self._peers: dict[bytes, dict[str, Announcement]] = {}

    def add(
        self, key: bytes, peer: str, ttl: float | None = None, origin: str | None = None
    ) -> bool:
        """Add (or refresh) ``peer`` at ``key`` as announced by ``origin``; False if refused."""
        now = self.clock()
        life = _life(ttl, self.ttl)
        own = origin is not None and _host_of(peer) == origin.strip("[]")
        peers = self._peers.get(key)
        if peers is None:
            if len(self._peers) >= self.max_keys:
                self.cull()
                if len(self._peers) >= self.max_keys:
                    oldest = min(self._peers, key=lambda k: _latest(self._peers[k]))
                    self._peers.pop(oldest)
            peers = self._peers[key] = {}
        current = peers.get(peer)
        if current is None:
            if origin is not None:
                limit = self.own_per_announcer if own else self.third_party_per_announcer
                mine = [p for p, a in peers.items() if a.origin == origin and a.own == own]
                if len(mine) >= limit:  # the announcer's own oldest entry makes room
                    del peers[min(mine, key=lambda p: peers[p].expires)]
            if len(peers) >= self.max_peers and not self._evict(peers, own, now):
                return False
            peers[peer] = Announcement(now + life, origin, own)
            return True
        current.expires = max(current.expires, now + life)
        if own and not current.own:  # the host itself vouches for an entry a third party made
            current.origin, current.own = origin, True
        return True

    def _evict(self, peers: dict[str, Announcement], own: bool, now: float) -> bool:
        """Make room for one entry: the soonest-expiring third-party one, else (for an own
        entry only) the soonest-expiring own one."""
        for candidates in ([p for p, a in peers.items() if not a.own], list(peers) if own else []):
            if candidates:
                del peers[min(candidates, key=lambda p: peers[p].expires)]
                return True
        return False

    def get(self, key: bytes) -> list[str]:
        """Live entries, those the hosts announced themselves first."""
        return [peer for peer, _ in self.ranked(key)]

    def ranked(self, key: bytes) -> list[tuple[str, bool]]:
        """(peer, announced by itself) of live entries, own ones first."""
        now = self.clock()
        live = [(p, a.own) for p, a in self._peers.get(key, {}).items() if a.expires > now]
        return [item for item in live if item[1]] + [item for item in live if not item[1]]

    def items(self) -> list[tuple[bytes, str, float, str | None]]:
        """(key, peer, seconds left, origin) of every live announcement."""
        now = self.clock()
        self.cull()
        return [
            (k, p, a.expires - now, a.origin)
            for k, peers in self._peers.items()
            for p, a in peers.items()
        ]

    def cull(self) -> None:
        now = self.clock()
        for key, peers in list(self._peers.items()):
            for peer in [p for p, a in peers.items() if a.expires <= now]:
                del peers[peer]
            if not peers:
                del self._peers[key]

    def __len__(self) -> int:
        self.cull()
        return sum(len(p) for p in self._peers.values())


def _latest(peers: dict[str, Announcement]) -> float:
    return max((a.expires for a in peers.values()), default=0.0)


def _host_of(peer: str) -> str:
    return peer.rpartition(":")[0].strip("[]")


def _hex(key: object) -> str:
    return key.hex() if isinstance(key, bytes) else repr(key)[:60]


_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*")


def peer_address(host: str, port: int) -> str:
    """``host:port`` as lookups return it (IPv6 in brackets); ValueError if either is invalid."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError("port must be an integer in 1-65535")
    if not isinstance(host, str):
        raise ValueError("host must be a string")
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        if not _HOSTNAME.fullmatch(host):
            raise ValueError("host is neither an IP address nor a hostname") from None
        return f"{host}:{port}"
    return f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"


def is_peer_address(text: object) -> bool:
    """True for exactly what ``peer_address`` produces: what a DHT peer may ask us to store."""
    return isinstance(text, str) and len(text) <= 300 and _is_peer_text(text)


@functools.lru_cache(maxsize=4096)  # every announce and lookup reply checks the same few
def _is_peer_text(text: str) -> bool:
    host, _, port = text.rpartition(":")
    if not port.isdigit() or len(port) > 5:
        return False
    try:
        return peer_address(host, int(port)) == text
    except ValueError:
        return False


def _life(ttl: float | None, cap: float) -> float:
    """A lifetime asked for over the wire, capped at ours; NaN or infinity would never expire."""
    if ttl is None:
        return cap
    if not is_seconds(ttl):
        raise RecordError(records.MALFORMED, "ttl must be a finite number of seconds")
    return min(float(ttl), cap)
