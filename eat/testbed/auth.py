"""Access control of the HTTP service: API keys (bearer tokens) and a per-key rate limit.

**Keys** come from two places, never from ``params.yaml``:

- the environment variable named by ``testbed.service.api_keys_env``: comma-separated
  keys, each at least :data:`MIN_KEY_CHARS` characters; they are hashed on load and the
  variable is removed from this process's environment, so that the Ray processes the
  service starts do not inherit it;
- the file named by ``testbed.service.api_keys_file``, outside the repository: one
  ``sha256:<64 hex digits>`` line per key, optionally followed by a label; ``#`` starts a
  comment. It holds hashes only (``eat testbed-keygen`` makes a key and its line).

Only SHA-256 hashes are kept in memory. A request presents ``Authorization: Bearer
<key>``; a missing or wrong key gets the same 401 (nothing else is revealed). Keys are
random (``eat testbed-keygen``: 32 random bytes), so a fast unsalted hash is enough.

**Binding.** Bound to anything but loopback the service refuses to start without keys.
On loopback without keys it is open to every local client, and says so at start-up.

**Rate limit.** A token bucket per key: ``rate_limit_burst`` requests at once, refilled at
``rate_limit_per_s``; past it a request gets 429 with ``Retry-After``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import os
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

MIN_KEY_CHARS = 32
KEY_PREFIX = "eat_"
_HASH_LINE = re.compile(r"^sha256:([0-9a-f]{64})(?:\s+(\S.*))?$")


class KeySetupError(ValueError):
    """The API keys cannot be loaded (the message names the variable or file; it never
    contains a key)."""


def key_hash(key: str) -> str:
    """The stored form of a key: its SHA-256 in hex."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> tuple[str, str]:
    """A fresh key and its key-file line (``sha256:<hex>``)."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    return key, f"sha256:{key_hash(key)}"


@dataclass(frozen=True)
class KeyRing:
    """The hashes of the accepted keys; empty: no keys configured."""

    hashes: dict[str, str] = field(default_factory=dict)
    """Key hash -> key id (``key_`` and the hash's first 12 hex digits)."""

    @property
    def required(self) -> bool:
        return bool(self.hashes)

    def identify(self, authorization: str | None) -> str | None:
        """The key id of an ``Authorization`` header value, or None (missing or wrong)."""
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None
        return self.hashes.get(key_hash(token))


def _key_id(digest: str) -> str:
    return "key_" + digest[:12]


def load_keys(env_name: str, key_file: str | None, repository: Path) -> KeyRing:
    """The keys of the module docstring. ``repository``: the folder a key file must not be
    in (the checkout that holds ``params.yaml``)."""
    hashes: dict[str, str] = {}
    raw = os.environ.pop(env_name, None)  # Ray processes started later must not inherit it
    if raw is not None:
        keys = [key.strip() for key in raw.split(",") if key.strip()]
        for number, key in enumerate(keys, start=1):
            if len(key) < MIN_KEY_CHARS:
                raise KeySetupError(
                    f"{env_name}: key {number} of {len(keys)} has {len(key)} characters; use "
                    f"at least {MIN_KEY_CHARS} (eat testbed-keygen makes one)"
                )
            digest = key_hash(key)
            hashes[digest] = _key_id(digest)
    if key_file is not None:
        path = Path(key_file).expanduser().resolve()
        root = repository.resolve()
        if path == root or root in path.parents:
            raise KeySetupError(
                f"testbed.service.api_keys_file {path} is inside the repository {root}; keep "
                "key files outside it"
            )
        try:
            lines = path.read_text().splitlines()
        except OSError as error:
            raise KeySetupError(
                f"testbed.service.api_keys_file {path} cannot be read: {error.strerror}"
            ) from None
        for number, line in enumerate(lines, start=1):
            text = line.split("#", 1)[0].strip()
            if not text:
                continue
            match = _HASH_LINE.match(text)
            if match is None:
                raise KeySetupError(
                    f"testbed.service.api_keys_file {path} line {number} is not a key hash "
                    "('sha256:' and 64 lower-case hex digits, then an optional label); the "
                    "file holds hashes, never keys (eat testbed-keygen prints the line)"
                )
            digest = match.group(1)
            hashes[digest] = _key_id(digest)
    return KeyRing(hashes)


def is_loopback(host: str) -> bool:
    """``host`` is a loopback address (or ``localhost``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def access_line(host: str, keys: KeyRing) -> str:
    """What the service says at start-up about who may use it; raises
    :class:`KeySetupError` for a non-loopback host without keys."""
    if keys.required:
        return f"access: an API key is required ({len(keys.hashes)} key(s) loaded)"
    if not is_loopback(host):
        raise KeySetupError(
            f"binding to {host} needs API keys: set the environment variable named by "
            "testbed.service.api_keys_env, or testbed.service.api_keys_file (docs/serving.md)"
        )
    return (
        f"access: open, no API keys configured; {host} is loopback, so every local client "
        "may submit"
    )


class RateLimiter:
    """Token buckets, one per key id (module docstring)."""

    def __init__(
        self, per_s: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if per_s <= 0 or burst < 1:
            raise ValueError(f"rate limit needs per_s > 0 and burst >= 1, got {per_s}, {burst}")
        self.per_s = per_s
        self.burst = burst
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key id -> (tokens, at)

    def take(self, key_id: str) -> float:
        """Spend one token of ``key_id``: 0.0 if allowed, else the seconds until one is
        available (nothing is spent)."""
        now = self.clock()
        tokens, at = self._buckets.get(key_id, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.per_s)
        if tokens >= 1.0:
            self._buckets[key_id] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key_id] = (tokens, now)
        return (1.0 - tokens) / self.per_s

    @staticmethod
    def retry_after(wait_s: float) -> int:
        return max(1, math.ceil(wait_s))


__all__ = [
    "KeyRing",
    "KeySetupError",
    "RateLimiter",
    "access_line",
    "is_loopback",
    "key_hash",
    "load_keys",
    "new_key",
]
