"""API keys with roles, stored only as SHA-256 hashes.

A key is a long random token; the file keeps its SHA-256 digest, its role and when
it was made. Because keys carry 256 bits of randomness, a fast hash is enough: there
is nothing to guess. Each endpoint names a permission and each role holds a set of
permissions; ``admin`` holds them all.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from features.errors import (
    AuthenticationError,
    ConfigurationError,
    InputError,
    PermissionDeniedError,
)

logger = logging.getLogger(__name__)

Role = Literal["notification", "campaign", "admin"]
Permission = Literal["recommend", "needs", "segments", "reload", "info"]

ROLES: tuple[Role, ...] = ("notification", "campaign", "admin")
ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "notification": frozenset({"recommend", "needs", "info"}),
    "campaign": frozenset({"segments", "info"}),
    "admin": frozenset({"recommend", "needs", "segments", "reload", "info"}),
}
KEY_PREFIX = "pk"
KEY_HEADER = "x-api-key"


@dataclass(frozen=True)
class KeyRecord:
    """One stored key: its hash, its role and when it was created."""

    key_id: str
    sha256: str
    role: str
    created_at: str


def hash_key(key: str) -> str:
    """SHA-256 hex digest of an API key."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key(role: str) -> str:
    """A fresh random API key whose prefix shows its role (not a secret)."""
    return f"{KEY_PREFIX}_{role}_{secrets.token_urlsafe(32)}"


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise InputError(
            f"role must be one of {list(ROLES)}, got {role!r}; pick one of those"
        )


class KeyStore:
    """The hashed API keys of one file, looked up by the hash of a presented key."""

    def __init__(self, records: list[KeyRecord]) -> None:
        self.records = records
        self._role_by_hash = {record.sha256: record.role for record in records}

    @classmethod
    def load(cls, path: Path) -> KeyStore:
        """Read the key file; a missing file holds no keys.

        Raises:
            ConfigurationError: when the file is not a key file.
        """
        if not path.exists():
            logger.warning("no API key file at %s; every request will get 401", path)
            return cls([])
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
            records = [KeyRecord(**item) for item in payload["keys"]]
        except (ValueError, KeyError, TypeError) as error:
            raise ConfigurationError(
                f"expected {path} to hold {{'keys': [{{key_id, sha256, role, "
                f"created_at}}]}}, got unreadable content ({error}); recreate it "
                "with 'precision keys create'"
            ) from error
        for record in records:
            _check_role(record.role)
        return cls(records)

    def save(self, path: Path) -> None:
        """Write the key file aside, then rename it over the old one (mode 0600)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"keys": [record.__dict__ for record in self.records]}
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".api_keys.")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                json.dump(payload, out, indent=2)
            os.chmod(temporary, 0o600)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def add(self, role: str) -> str:
        """Create a key for ``role``, keep its hash and return the key itself."""
        _check_role(role)
        key = new_key(role)
        record = KeyRecord(
            key_id=secrets.token_hex(4),
            sha256=hash_key(key),
            role=role,
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        self.records.append(record)
        self._role_by_hash[record.sha256] = role
        return key

    def role_of(self, key: str) -> str | None:
        """The role of a presented key, or None when no stored key matches."""
        return self._role_by_hash.get(hash_key(key))


def create_key(path: Path, role: str) -> str:
    """Add a key for ``role`` to the key file and return it (shown only once)."""
    store = KeyStore.load(path) if path.exists() else KeyStore([])
    key = store.add(role)
    store.save(path)
    return key


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The API key of a request: ``X-API-Key`` or ``Authorization: Bearer``."""
    key = headers.get(KEY_HEADER)
    if key:
        return key.strip()
    authorization = headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def authorize(store: KeyStore, key: str | None, permission: str) -> str:
    """Check that ``key`` exists and its role holds ``permission``.

    Returns:
        The role of the key.

    Raises:
        AuthenticationError: no key, or one that matches no stored key (401).
        PermissionDeniedError: the key's role may not do this (403).
    """
    if not key:
        raise AuthenticationError(
            "expected an API key in the X-API-Key header (or Authorization: "
            "Bearer), got none; ask an administrator for a key"
        )
    role = store.role_of(key)
    if role is None:
        raise AuthenticationError(
            "expected a valid API key, got one that matches no stored key; check "
            "the key or ask an administrator for a new one"
        )
    if permission not in ROLE_PERMISSIONS[role]:
        allowed = sorted(r for r, p in ROLE_PERMISSIONS.items() if permission in p)
        raise PermissionDeniedError(
            f"this endpoint needs a key with role {allowed}, got role {role!r}; "
            "use a key of one of those roles"
        )
    return role
