"""API keys: read once from ``--keys FILE`` (one key per line), kept only as hashes.

A request's key is hashed and compared with every known hash in constant time. A key's
``owner`` id (what the job table stores) and its webhook signing secret are both derived from
the key with SHA-256 under different labels, so neither the table nor memory holds a key.
"""
from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

#: Shortest accepted key: shorter ones can be guessed.
MIN_KEY_LENGTH = 16


def owner_id(key: str) -> str:
    """The id a key's jobs are stored under."""
    return hashlib.sha256(b"anonymize-owner:" + key.encode()).hexdigest()


def signing_secret(key: str) -> str:
    """The secret webhooks to this key's callbacks are signed with: hex SHA-256 of
    ``"anonymize-webhook:" + key``. A client computes it from its key (docs/service.md)."""
    return hashlib.sha256(b"anonymize-webhook:" + key.encode()).hexdigest()


class Keys:
    """The known keys, as hashes. ``Keys(None)`` (no --keys): every request is one anonymous owner."""

    def __init__(self, lines: list[str] | None):
        self.enabled = lines is not None
        #: owner id -> signing secret
        self._owners: dict[str, str] = {}
        for key in lines or []:
            self._owners[owner_id(key)] = signing_secret(key)

    @classmethod
    def from_file(cls, path: Path) -> "Keys":
        """Keys from a file: one per line; blank lines and lines starting with # are ignored.
        ValueError for a file with no key or a key shorter than :data:`MIN_KEY_LENGTH`."""
        keys = []
        for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if len(line) < MIN_KEY_LENGTH or any(c.isspace() for c in line):
                raise ValueError(f"{path}: line {n}: a key must be at least {MIN_KEY_LENGTH} characters, no spaces")
            keys.append(line)
        if not keys:
            raise ValueError(f"{path}: no key in the file")
        return cls(keys)

    def __len__(self) -> int:
        return len(self._owners)

    def check(self, authorization: str | None) -> str | None:
        """The owner id of a valid ``Authorization: Bearer KEY`` header, else None. Without
        keys configured every request is the owner "anonymous"."""
        if not self.enabled:
            return "anonymous"
        if not authorization or not authorization.startswith("Bearer "):
            return None
        candidate = owner_id(authorization[len("Bearer "):].strip())
        found = None
        for known in self._owners:  # every hash compared, in constant time each
            if hmac.compare_digest(candidate, known):
                found = known
        return found

    def secret(self, owner: str) -> str | None:
        """The webhook signing secret of ``owner`` (None without keys: webhooks go unsigned)."""
        return self._owners.get(owner)
