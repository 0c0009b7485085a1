"""Reads of a feature service's rows straight from the online store's layout.

Feast's ``get_online_features`` parses one protobuf message per card and feature,
assembles a response message and converts every value back to Python again: for
the ~80 card features that is most of a millisecond per card. Feature values repeat
a lot (counts, categories, flags), so this reader fetches the stored bytes with one
query per feature view (SQLite) or one pipeline (Redis) and decodes each distinct
byte string once, with Feast's own conversion, keeping the results in a bounded
memo. It reads the layouts Feast 0.67 writes (the same ones
:mod:`features.online_writer` bulk loads); the tests compare its rows with
``get_online_features`` on both stores, so a Feast upgrade that changes a layout
fails there first.
"""

from __future__ import annotations

import itertools
import logging
import sqlite3
import threading
from dataclasses import dataclass
from typing import Any

from features.errors import ConfigurationError
from features.feature_tables import VIEW_KEYS
from features.online_writer import serialised_entity_keys

logger = logging.getLogger(__name__)

MEMO_SIZE = 500_000
_MISSING = object()
# Feast stores an unset value as an empty message (or no field at all in Redis).
_EMPTY: dict[bytes | None, Any] = {None: None, b"": None}


@dataclass(frozen=True)
class _View:
    """One feature view of the service, as the online store names it."""

    table: str
    join_key: str
    features: tuple[str, ...]
    fields: tuple[bytes, ...]
    lists: tuple[str, ...]


def supports(store: Any) -> bool:
    """Whether the store's online layout is one this reader knows."""
    config = store.config.online_store
    if config.type == "sqlite":
        return True
    return config.type == "redis" and str(config.redis_type.value) == "redis"


class LayoutReader:
    """Rows of one single-key feature service, read from the online layout.

    Args:
        store: an applied Feast store whose online store :func:`supports` names.
        service: the feature service; all of its views must share one join key.
        memo_size: most distinct stored values kept decoded.

    Raises:
        ConfigurationError: for another online store or a service keyed by more
            than one join key.
    """

    def __init__(self, store: Any, service: str, memo_size: int = MEMO_SIZE) -> None:
        if not supports(store):
            raise ConfigurationError(
                f"online store {store.config.online_store.type!r}: expected SQLite or "
                "a single Redis server for direct reads; read through Feast instead"
            )
        self.store = store
        self.kind = store.config.online_store.type
        self.views = _service_views(store, service)
        keys = {view.join_key for view in self.views}
        if len(keys) != 1:
            raise ConfigurationError(
                f"feature service {service}: expected one join key for direct reads, "
                f"got {sorted(keys)}"
            )
        self.join_key = keys.pop()
        self.memo_size = memo_size
        self._memo: dict[bytes | None, Any] = dict(_EMPTY)
        self._local = threading.local()

    def rows(self, keys: list[str]) -> list[dict[str, Any]]:
        """One dictionary per key, as ``get_online_features(...).to_dict()`` rows.

        Unknown keys get ``None`` for every feature.
        """
        if not keys:
            return []
        entity_keys = serialised_entity_keys(self.store, self.join_key, list(keys))
        rows: list[dict[str, Any]] = [{self.join_key: key} for key in keys]
        for view in self.views:
            stored = self._fetch(view, entity_keys)
            for row, values in zip(rows, stored, strict=True):
                row.update(zip(view.features, self._decoded(values), strict=True))
            for name in view.lists:
                for row in rows:
                    if row[name] is not None:
                        row[name] = list(row[name])
        return rows

    def _fetch(self, view: _View, entity_keys: list[bytes]) -> list[list[bytes | None]]:
        """Stored bytes of the view's features per entity key (None when absent)."""
        if self.kind == "sqlite":
            return self._fetch_sqlite(view, entity_keys)
        return self._fetch_redis(view, entity_keys)

    def _fetch_sqlite(
        self, view: _View, entity_keys: list[bytes]
    ) -> list[list[bytes | None]]:
        connection = self._sqlite()
        distinct = list(dict.fromkeys(entity_keys))
        found: dict[bytes, dict[str, bytes]] = {key: {} for key in distinct}
        # SQLite takes at most 32,766 parameters in one statement.
        for start in range(0, len(distinct), 30_000):
            part = distinct[start : start + 30_000]
            marks = ",".join("?" * len(part))
            query = (
                f"SELECT entity_key, feature_name, value FROM {_quoted(view.table)} "
                f"WHERE entity_key IN ({marks})"
            )
            for entity_key, name, value in connection.execute(query, part):
                found[entity_key][name] = value
        return [[found[key].get(name) for name in view.features] for key in entity_keys]

    def _fetch_redis(
        self, view: _View, entity_keys: list[bytes]
    ) -> list[list[bytes | None]]:
        client = self._redis()
        project = self.store.config.project.encode()
        with client.pipeline(transaction=False) as pipe:
            for key in entity_keys:
                pipe.hmget(key + project, view.fields)
            return pipe.execute()

    def _decoded(self, stored: list[bytes | None]) -> list[Any]:
        """Plain values of stored bytes, each distinct one decoded only once."""
        values = list(map(self._memo.get, stored, itertools.repeat(_MISSING)))
        if _MISSING not in values:
            return values
        for position, value in enumerate(values):
            if value is _MISSING:
                raw = stored[position]
                values[position] = self._memo[raw] = _python_value(raw)
        if len(self._memo) > self.memo_size:
            self._memo = dict(_EMPTY)
        return values

    def _sqlite(self) -> sqlite3.Connection:
        """This thread's connection to the SQLite online store."""
        connection = getattr(self._local, "sqlite", None)
        if connection is None:
            path = self.store.config.online_store.path
            connection = sqlite3.connect(path, timeout=30, check_same_thread=False)
            self._local.sqlite = connection
        return connection

    def _redis(self) -> Any:
        """Feast's own Redis client, so the store's connection string applies."""
        client = getattr(self, "_redis_client", None)
        if client is None:
            from feast.infra.online_stores.helpers import get_online_store_from_config

            config = self.store.config.online_store
            client = get_online_store_from_config(config)._get_client(config)
            self._redis_client = client
        return client


def _service_views(store: Any, service: str) -> list[_View]:
    """The views of a feature service with their online table and field names."""
    from feast.infra.online_stores.helpers import (
        _mmh3,
        compute_table_id,
        compute_versioned_name,
    )
    from feast.types import Array

    config = store.config
    versioning = config.registry.enable_online_feature_view_versioning
    views = []
    for projection in store.get_feature_service(service).feature_view_projections:
        feature_view = store.get_feature_view(projection.name)
        name = compute_versioned_name(feature_view, versioning)
        features = tuple(feature.name for feature in projection.features)
        lists = tuple(
            feature.name
            for feature in projection.features
            if isinstance(feature.dtype, Array)
        )
        fields = tuple(_mmh3(f"{name}:{feature}") for feature in features)
        views.append(
            _View(
                table=compute_table_id(config.project, feature_view, versioning),
                join_key=VIEW_KEYS[projection.name.removesuffix("_fv")],
                features=features,
                fields=fields,
                lists=lists,
            )
        )
    return views


def _python_value(raw: bytes) -> Any:
    """Feast's own conversion of a serialised value message to Python."""
    from feast.protos.feast.types.Value_pb2 import Value
    from feast.type_map import feast_value_type_to_python_type

    return feast_value_type_to_python_type(Value.FromString(raw))


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
