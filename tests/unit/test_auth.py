"""API keys: stored hashed, looked up by hash, checked against roles."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from features.errors import (
    AuthenticationError,
    ConfigurationError,
    InputError,
    PermissionDeniedError,
)
from serving.auth import (
    ROLE_PERMISSIONS,
    KeyStore,
    authorize,
    create_key,
    hash_key,
    presented_key,
)


def test_created_key_is_stored_only_as_its_hash(tmp_path: Path) -> None:
    path = tmp_path / "api_keys.json"

    key = create_key(path, "campaign")

    text = path.read_text()
    assert key not in text
    assert hash_key(key) in text
    assert json.loads(text)["keys"][0]["role"] == "campaign"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_keys_from_the_file_authorize_their_roles(tmp_path: Path) -> None:
    path = tmp_path / "api_keys.json"
    notify = create_key(path, "notification")
    admin = create_key(path, "admin")

    store = KeyStore.load(path)

    assert authorize(store, notify, "recommend") == "notification"
    assert authorize(store, admin, "segments") == "admin"
    assert len({notify, admin}) == 2


@pytest.mark.parametrize(
    ("role", "permission"),
    [
        ("notification", "segments"),
        ("campaign", "recommend"),
        ("campaign", "needs"),
        ("notification", "reload"),
        ("campaign", "reload"),
    ],
)
def test_a_role_without_the_permission_is_forbidden(
    tmp_path: Path, role: str, permission: str
) -> None:
    store = KeyStore([])
    key = store.add(role)

    with pytest.raises(PermissionDeniedError, match="needs a key with role"):
        authorize(store, key, permission)


def test_admin_holds_every_permission() -> None:
    others = set().union(*(p for r, p in ROLE_PERMISSIONS.items() if r != "admin"))
    assert others | {"reload"} <= ROLE_PERMISSIONS["admin"]


@pytest.mark.parametrize(
    "key", [None, "", "pk_admin_guessed"], ids=["none", "empty", "wrong"]
)
def test_missing_or_unknown_key_is_unauthenticated(key: str | None) -> None:
    store = KeyStore([])
    store.add("admin")

    with pytest.raises(AuthenticationError):
        authorize(store, key, "recommend")


def test_unknown_role_is_refused() -> None:
    with pytest.raises(InputError, match="role must be one of"):
        KeyStore([]).add("superuser")


def test_a_malformed_key_file_is_a_configuration_error(tmp_path: Path) -> None:
    path = tmp_path / "api_keys.json"
    path.write_text("{not json")

    with pytest.raises(ConfigurationError, match="precision keys create"):
        KeyStore.load(path)


def test_a_missing_key_file_holds_no_keys(tmp_path: Path) -> None:
    assert KeyStore.load(tmp_path / "absent.json").records == []


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"x-api-key": " abc "}, "abc"),
        ({"authorization": "Bearer abc"}, "abc"),
        ({"authorization": "Basic abc"}, None),
        ({}, None),
    ],
    ids=["header", "bearer", "basic", "none"],
)
def test_the_key_is_read_from_either_header(
    headers: dict, expected: str | None
) -> None:
    assert presented_key(headers) == expected
