"""HTTP Basic authentication at run time: bcrypt checks, remembered successes, a bounded queue.

The web configuration file (:mod:`exporter.web.web_config`) names the users and their bcrypt
hashes; this module checks each request's ``Authorization`` header against them, as the
exporter-toolkit's ``web/cache.go`` does: bcrypt once per credential, not per request.
"""

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import threading
from collections import OrderedDict
from collections.abc import Mapping
from enum import Enum

import bcrypt

_BCRYPT_HASH = re.compile(r"\$2[aby]\$(?P<cost>0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")
# The most a scrape can afford. A check of a password not yet remembered waits behind at
# most 4 others (``max_waiting``); at cost 14 one takes 1 to 1.4 s on a 2-core machine, so
# those 5 fit in Prometheus' default 10 s timeout. Each step doubles it: 4.5 s at 16,
# about 13 hours at 31, which start-up would pay once for the dummy hash.
MAX_BCRYPT_COST = 14


def bcrypt_cost(password_hash: str) -> int:
    """The cost of a bcrypt hash; ValueError for anything that is not one, or that costs
    more than ``MAX_BCRYPT_COST``."""
    match = _BCRYPT_HASH.fullmatch(password_hash)
    if match is None:
        raise ValueError("not a bcrypt hash ($2a$, $2b$ or $2y$, cost 4 to 31)")
    cost = int(match["cost"])
    if cost > MAX_BCRYPT_COST:
        raise ValueError(
            f"bcrypt cost {cost} is above {MAX_BCRYPT_COST}, more than a scrape can wait "
            f"for (each step doubles a check's time): hash the password again at cost 10"
        )
    return cost


class AuthVerdict(Enum):
    """What a check of HTTP Basic credentials found."""

    ALLOWED = "allowed"
    DENIED = "denied"
    # Too many bcrypt checks are already waiting; the credentials were not checked.
    BUSY = "busy"


class BasicAuth:
    """Checks HTTP Basic credentials against bcrypt hashes, in time that hides who exists.

    Credentials that succeeded are remembered under a SHA-256 of (user, hash, password),
    as the exporter-toolkit does, so a Prometheus scraping every few seconds pays for
    bcrypt once; the memory is bounded (least recently used entries go first). Failures
    are not remembered: random wrong passwords would evict the real scraper's entry.
    bcrypt runs one at a time, so a flood of wrong passwords costs at most one core, and
    at most ``max_waiting`` checks wait for it: past that the verdict is BUSY at once, so
    a flood cannot hold every worker thread in the queue.
    """

    def __init__(
        self, users: Mapping[str, str], *, cache_size: int = 1024, max_waiting: int = 4
    ) -> None:
        """Take user -> bcrypt hash; raise ValueError for a hash that is not bcrypt."""
        costs = [bcrypt_cost(password_hash) for password_hash in users.values()]
        self._users = {
            user.encode(): password_hash.encode() for user, password_hash in users.items()
        }
        # Unknown users are checked against this, at the highest configured cost, so that
        # a wrong user name takes as long as a wrong password.
        self._dummy_hash = bcrypt.hashpw(
            secrets.token_bytes(16), bcrypt.gensalt(rounds=max(costs, default=4))
        )
        self._accepted: OrderedDict[bytes, None] = OrderedDict()
        self._cache_size = cache_size
        self._cache_lock = threading.Lock()
        self._bcrypt_lock = threading.Lock()
        self._bcrypt_places = threading.BoundedSemaphore(max_waiting)

    def verify(self, authorization_header: str | None) -> AuthVerdict:
        """Whether an ``Authorization`` header carries a known user and its password."""
        credentials = _parse_basic(authorization_header)
        if credentials is None:
            return AuthVerdict.DENIED
        user, password = credentials
        password_hash = self._find_hash(user)
        key = _cache_key(user, password, password_hash or self._dummy_hash)
        if password_hash is not None and self._remembered(key):
            return AuthVerdict.ALLOWED
        if not self._bcrypt_places.acquire(blocking=False):
            return AuthVerdict.BUSY
        try:
            with self._bcrypt_lock:
                # Another thread may have just checked the same credentials.
                matches = self._remembered(key) or _bcrypt_matches(
                    password, password_hash or self._dummy_hash
                )
        finally:
            self._bcrypt_places.release()
        if not matches or password_hash is None:
            return AuthVerdict.DENIED
        self._remember(key)
        return AuthVerdict.ALLOWED

    def _find_hash(self, user: bytes) -> bytes | None:
        # Compare with every user, without stopping early, so timing does not tell names.
        found = None
        for known_user, password_hash in self._users.items():
            if hmac.compare_digest(known_user, user):
                found = password_hash
        return found

    def _remembered(self, key: bytes) -> bool:
        with self._cache_lock:
            if key not in self._accepted:
                return False
            self._accepted.move_to_end(key)
            return True

    def _remember(self, key: bytes) -> None:
        with self._cache_lock:
            self._accepted[key] = None
            while len(self._accepted) > self._cache_size:
                self._accepted.popitem(last=False)


def _bcrypt_matches(password: bytes, password_hash: bytes) -> bool:
    try:
        return bcrypt.checkpw(password, password_hash)
    except ValueError:  # bcrypt refuses passwords longer than 72 bytes
        return False


def _cache_key(user: bytes, password: bytes, password_hash: bytes) -> bytes:
    digest = hashlib.sha256()
    # Length prefixes keep ("ab", "c") and ("a", "bc") apart.
    for part in (user, password_hash):
        digest.update(len(part).to_bytes(4, "big"))
        digest.update(part)
    digest.update(password)
    return digest.digest()


def _parse_basic(header: str | None) -> tuple[bytes, bytes] | None:
    if header is None:
        return None
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, colon, password = decoded.partition(b":")
    if not colon:
        return None
    return user, password
