"""Bulk loading of the latest feature rows into Feast's online store.

Feast's stock materialization converts every cell to a protobuf value and writes
one row at a time. Feature values repeat a lot (counts, categories, flags), so here
each distinct value of a column is converted and serialised once with Feast's own
conversion and reused. SQLite gets a bulk load into Feast's table layout (one row per
entity key and feature, the value as a serialised protobuf): the rows go, sorted by
key, into a fresh table in one transaction that then replaces the live table, so a
reader sees either the old load or the new one, never half of one. A single Redis
server gets Feast's hash layout as raw pipelined HSET commands assembled from pieces
encoded once per distinct value (each key is overwritten whole per view, so a reader
sees a card's old or new row of a view). Any other online store gets the reused
values through its own ``online_write_batch`` in chunks. Either way Feast's standard
online read serves the result.
"""

from __future__ import annotations

import itertools
import logging
import sqlite3
import struct
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features.errors import ConfigurationError
from features.feature_tables import VIEW_KEYS
from features.schema import EVENT_TIMESTAMP

if TYPE_CHECKING:
    from feast import FeatureStore, FeatureView

logger = logging.getLogger(__name__)

CHUNK_KEYS = 20_000
SQLITE_CHUNK_KEYS = 50_000
# The columns of Feast's SQLite online table, in its order (Feast 0.67).
SQLITE_COLUMNS = (
    "entity_key",
    "feature_name",
    "value",
    "value_text",
    "vector_value",
    "event_ts",
    "created_ts",
)


def latest_rows(path: Path, key: str) -> pa.Table:
    """The newest row of every key in a feature table."""
    quoted = str(path.resolve()).replace("'", "''")
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        return con.sql(
            f"SELECT * FROM read_parquet('{quoted}') "
            f"QUALIFY row_number() OVER (PARTITION BY {key} "
            f"ORDER BY {EVENT_TIMESTAMP} DESC) = 1 ORDER BY {key}"
        ).to_arrow_table()
    finally:
        con.close()


def write_latest_rows(
    store: FeatureStore, path: Path, view: str, progress: bool = False
) -> int:
    """Write the newest row of every key of ``view`` into the online store.

    Args:
        store: an applied feature store.
        path: the view's parquet table.
        view: the view name (its feature view is ``<view>_fv``).
        progress: show a progress bar on standard error.

    Returns:
        The number of keys written.
    """
    feature_view = store.get_feature_view(f"{view}_fv")
    table = latest_rows(path, VIEW_KEYS[view])
    with _ProgressBar(view, table.num_rows, progress) as advance:
        if store.config.online_store.type == "sqlite":
            _load_sqlite(store, feature_view, table, advance)
        elif _plain_redis(store):
            _load_redis(store, feature_view, table, advance)
        else:
            online_store = store._get_provider().online_store
            for start in range(0, table.num_rows, CHUNK_KEYS):
                chunk = table.slice(start, CHUNK_KEYS)
                rows = list(_online_rows(store, feature_view, chunk))
                online_store.online_write_batch(store.config, feature_view, rows, None)
                advance(chunk.num_rows)
    _record_interval(store, feature_view, table)
    return table.num_rows


def encoded_values(column: pa.ChunkedArray | pa.Array, value_type: Any) -> np.ndarray:
    """Feast protobuf values of a column, converting each distinct value once.

    Returns:
        An object array of ``ValueProto``; equal cells share one message.
    """
    codes, protos = distinct_values(column, value_type)
    return protos[codes]


def distinct_values(
    column: pa.ChunkedArray | pa.Array, value_type: Any
) -> tuple[np.ndarray, np.ndarray]:
    """Each cell's position among the column's distinct values, and their protos.

    List cells are not deduplicated: each is its own distinct value.
    """
    from feast.type_map import python_values_to_proto_values

    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_list(array.type) or pa.types.is_large_list(array.type):
        distinct = array.to_numpy(zero_copy_only=False)
        codes = np.arange(len(distinct))
    else:
        encoded = pc.dictionary_encode(array, null_encoding="encode")
        distinct = encoded.dictionary.to_numpy(zero_copy_only=False)
        codes = encoded.indices.to_numpy(zero_copy_only=False)
    protos = np.empty(len(distinct), dtype=object)
    protos[:] = python_values_to_proto_values(distinct, value_type)
    return codes, protos


def _entity_keys(store: FeatureStore, key: str, values: pa.Array) -> list[Any]:
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    return [
        EntityKey(join_keys=[key], entity_values=[Value(string_val=value)])
        for value in values.to_pylist()
    ]


def _event_times(chunk: pa.Table) -> list[datetime]:
    from feast.utils import to_naive_utc

    column = chunk.column(EVENT_TIMESTAMP).cast(pa.timestamp("us", tz="UTC"))
    return [to_naive_utc(stamp) for stamp in column.to_pylist()]


def _online_rows(
    store: FeatureStore, feature_view: FeatureView, chunk: pa.Table
) -> Iterator[tuple[Any, dict[str, Any], datetime, None]]:
    """Rows in the shape ``online_write_batch`` takes, with shared values."""
    key = VIEW_KEYS[feature_view.name.removesuffix("_fv")]
    names = [feature.name for feature in feature_view.features]
    columns = [
        encoded_values(chunk.column(feature.name), feature.dtype.to_value_type())
        for feature in feature_view.features
    ]
    entity_keys = _entity_keys(store, key, chunk.column(key))
    times = _event_times(chunk)
    for row, entity_key in enumerate(entity_keys):
        values = {
            name: column[row] for name, column in zip(names, columns, strict=True)
        }
        yield entity_key, values, times[row], None


def _load_sqlite(
    store: FeatureStore,
    feature_view: FeatureView,
    table: pa.Table,
    advance: Callable[[int], None],
) -> None:
    """Replace the view's SQLite online table with a bulk-loaded fresh one."""
    from feast.infra.online_stores.helpers import compute_table_id

    config = store.config
    live = compute_table_id(
        config.project,
        feature_view,
        config.registry.enable_online_feature_view_versioning,
    )
    loading = f"{live}__loading"
    key = VIEW_KEYS[feature_view.name.removesuffix("_fv")]
    order = _sorted_entity_keys(store, key, table.column(key))
    table = table.take(pa.array(order[0]))
    entity_keys = order[1]

    connection = sqlite3.connect(config.online_store.path, timeout=60)
    try:
        _check_layout(connection, live)
        # The load writes a fresh table: a crash leaves the live table as it was,
        # so the load needs no syncing of every page on its way.
        connection.execute("PRAGMA synchronous = OFF")
        connection.execute("PRAGMA cache_size = -262144")
        connection.execute("BEGIN IMMEDIATE")
        connection.execute(f"DROP TABLE IF EXISTS {_quoted(loading)}")
        connection.execute(
            f"CREATE TABLE {_quoted(loading)} (entity_key BLOB, feature_name TEXT, "
            "value BLOB, value_text TEXT, vector_value BLOB, event_ts timestamp, "
            "created_ts timestamp, PRIMARY KEY (entity_key, feature_name)) "
            "WITHOUT ROWID"
        )
        insert = (
            f"INSERT INTO {_quoted(loading)} (entity_key, feature_name, value, "
            "value_text, event_ts, created_ts) VALUES (?, ?, ?, ?, ?, ?)"
        )
        for start in range(0, table.num_rows, SQLITE_CHUNK_KEYS):
            chunk = table.slice(start, SQLITE_CHUNK_KEYS)
            keys = entity_keys[start : start + SQLITE_CHUNK_KEYS]
            connection.executemany(insert, _sqlite_rows(feature_view, chunk, keys))
            advance(chunk.num_rows)
        _swap(connection, loading, live)
        connection.commit()
    except BaseException:
        connection.rollback()
        raise
    finally:
        connection.close()


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _check_layout(connection: sqlite3.Connection, live: str) -> None:
    """Refuse to replace a table whose columns differ from the layout written here."""
    found = tuple(
        row[1] for row in connection.execute(f"PRAGMA table_info({_quoted(live)})")
    )
    if found != SQLITE_COLUMNS:
        raise ConfigurationError(
            f"online table {live}: expected columns {list(SQLITE_COLUMNS)}, got "
            f"{list(found)}; run 'precision features build --engine feast' or "
            "re-apply the repo with the Feast version the project pins"
        )


def _swap(connection: sqlite3.Connection, loading: str, live: str) -> None:
    """Put the loaded table in place of the live one, inside the open transaction.

    Feast's ``apply`` creates an index on ``entity_key`` by name; the primary key
    already serves lookups by entity key, so an empty partial index holds the name
    and costs nothing to keep.
    """
    connection.execute(f"DROP TABLE {_quoted(live)}")
    connection.execute(f"ALTER TABLE {_quoted(loading)} RENAME TO {_quoted(live)}")
    connection.execute(
        f"CREATE INDEX IF NOT EXISTS {_quoted(live + '_ek')} "
        f"ON {_quoted(live)} (entity_key) WHERE 0"
    )


def _sorted_entity_keys(
    store: FeatureStore, key: str, values: pa.ChunkedArray
) -> tuple[np.ndarray, list[bytes]]:
    """Row order by serialised entity key, and the serialised keys in that order."""
    serialised = serialised_entity_keys(store, key, values.to_pylist())
    order = sorted(range(len(serialised)), key=serialised.__getitem__)
    return np.array(order, dtype=np.int64), [serialised[i] for i in order]


def _sqlite_rows(
    feature_view: FeatureView, chunk: pa.Table, entity_keys: list[bytes]
) -> Iterator[tuple[Any, ...]]:
    """Rows of Feast's SQLite layout, by entity key and then feature name.

    Each distinct value is serialised once; the rows are zipped from object
    arrays, so no Python code runs per row.
    """
    from feast.infra.online_stores.helpers import extract_text_and_num

    features = sorted(feature_view.features, key=lambda feature: feature.name)
    values = np.empty((chunk.num_rows, len(features)), dtype=object)
    texts = np.empty((chunk.num_rows, len(features)), dtype=object)
    for position, feature in enumerate(features):
        codes, protos = distinct_values(
            chunk.column(feature.name), feature.dtype.to_value_type()
        )
        serialised = np.empty(len(protos), dtype=object)
        serialised[:] = [proto.SerializeToString() for proto in protos]
        text = np.empty(len(protos), dtype=object)
        text[:] = [extract_text_and_num(proto, False)[0] for proto in protos]
        values[:, position] = serialised[codes]
        texts[:, position] = text[codes]

    stamps = _sqlite_times(chunk)
    width = len(features)
    names = [feature.name for feature in features]
    return zip(
        itertools.chain.from_iterable(itertools.repeat(k, width) for k in entity_keys),
        itertools.cycle(names),
        values.ravel(),
        texts.ravel(),
        itertools.chain.from_iterable(itertools.repeat(t, width) for t in stamps),
        itertools.repeat(None),
    )


def _sqlite_times(chunk: pa.Table) -> list[Any]:
    """Event times as Feast's SQLite adapter stores them, adapting each once."""
    from feast.utils import to_naive_utc

    column = chunk.column(EVENT_TIMESTAMP).cast(pa.timestamp("us", tz="UTC"))
    encoded = pc.dictionary_encode(column.combine_chunks())
    adapted = [
        sqlite3.adapt(to_naive_utc(stamp)) for stamp in encoded.dictionary.to_pylist()
    ]
    return [adapted[i] for i in encoded.indices.to_numpy()]


def serialised_entity_keys(
    store: FeatureStore, key: str, values: list[str]
) -> list[bytes]:
    """Feast's serialised entity keys of single string join key values.

    Feast's encoding of a one-key entity is a prefix fixed by the join key, the
    value's length and the value's UTF-8 bytes; the prefix is taken from Feast's
    own encoding of an empty value, and the first key is checked against Feast.

    Raises:
        ConfigurationError: when Feast encodes keys differently from that.
    """
    from feast.infra.key_encoding_utils import serialize_entity_key

    version = store.config.entity_key_serialization_version
    empty = _entity_keys(store, key, pa.array([""]))[0]
    prefix = serialize_entity_key(empty, entity_key_serialization_version=version)
    prefix = prefix[: -len(_LENGTH.pack(0))]
    serialised = []
    for value in values:
        encoded = value.encode("utf-8")
        serialised.append(prefix + _LENGTH.pack(len(encoded)) + encoded)

    if values:
        first = _entity_keys(store, key, pa.array(values[:1]))[0]
        expected = serialize_entity_key(first, entity_key_serialization_version=version)
        if serialised[0] != expected:
            raise ConfigurationError(
                f"entity key encoding: expected Feast to encode {key}={values[0]!r} "
                f"as {serialised[0]!r}, got {expected!r}; materialize with "
                "'--engine feast' or pin the Feast version the project was built on"
            )
    return serialised


_LENGTH = struct.Struct("<I")


def _plain_redis(store: FeatureStore) -> bool:
    """Whether the online store is a single Redis server (not a cluster)."""
    config = store.config.online_store
    return config.type == "redis" and str(config.redis_type.value) == "redis"


def _load_redis(
    store: FeatureStore,
    feature_view: FeatureView,
    table: pa.Table,
    advance: Callable[[int], None],
) -> None:
    """Write the rows in Feast's Redis layout, as raw pipelined HSET commands.

    Feast keeps one hash per entity and project: the key is the serialised
    entity key followed by the project name, each feature is a field named by
    the murmur3 hash of ``<view>:<feature>`` holding the serialised value, and
    ``_ts:<view>`` holds the event time. The commands of a chunk are joined into
    one buffer from pieces encoded once per distinct value.
    """
    from feast.infra.online_stores.helpers import (
        compute_versioned_name,
        get_online_store_from_config,
    )

    config = store.config
    name = compute_versioned_name(
        feature_view, config.registry.enable_online_feature_view_versioning
    )
    key = VIEW_KEYS[name.removesuffix("_fv")]
    ttl = config.online_store.key_ttl_seconds
    redis_store = get_online_store_from_config(config.online_store)
    # The client of Feast's own Redis store, so its connection string applies.
    client = redis_store._get_client(config.online_store)
    connection = client.connection_pool.get_connection()
    try:
        connection.connect()
        replies = _ReplyCounter(connection)
        # One thread sends a chunk and counts its replies (socket waits release
        # the GIL) while this one assembles the next chunk.
        with ThreadPoolExecutor(1, thread_name_prefix="redis-load") as sender:
            pending = None
            for start in range(0, table.num_rows, CHUNK_KEYS):
                chunk = table.slice(start, CHUNK_KEYS)
                keys = serialised_entity_keys(store, key, chunk.column(key).to_pylist())
                keys = [entity_key + config.project.encode() for entity_key in keys]
                commands = _hset_commands(feature_view, name, chunk, keys, ttl)
                if pending is not None:
                    advance(pending.result())
                count = len(keys) * (2 if ttl else 1)
                pending = sender.submit(replies.send, commands, count, len(keys))
            if pending is not None:
                advance(pending.result())
    except BaseException:
        # Unread replies would confuse the next user of a pooled connection.
        connection.disconnect()
        raise
    finally:
        client.connection_pool.release(connection)


class _ReplyCounter:
    """Sends pipelined writes and checks their one-line replies in bulk.

    Every reply of HSET and EXPIRE is one line (an integer, or an error starting
    with ``-``), so the replies are counted by their line ends in large reads
    instead of being parsed one by one.
    """

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self._tail = b""

    def send(self, commands: bytes, count: int, keys: int) -> int:
        """Send ``commands``, wait for their ``count`` replies; returns ``keys``.

        Raises:
            ConfigurationError: when Redis answers a command with an error.
        """
        socket = self.connection._sock
        socket.sendall(commands)
        seen = 0
        while seen < count:
            data = socket.recv(1 << 20)
            if not data:
                raise ConfigurationError(
                    "Redis closed the connection during the online load; check the "
                    "server's log and its maxmemory setting, then materialize again"
                )
            data = self._tail + data
            if data.startswith(b"-") or b"\r\n-" in data:
                start = 0 if data.startswith(b"-") else data.index(b"\r\n-") + 2
                line = data[start : data.find(b"\r\n", start)].decode(errors="replace")
                raise ConfigurationError(
                    f"Redis refused an online write: {line}; fix the server (memory, "
                    "permissions) and materialize again"
                )
            seen += data.count(b"\r\n")
            end = data.rfind(b"\r\n")
            self._tail = data[end + 2 :] if end >= 0 else data
        return keys


def _hset_commands(
    feature_view: FeatureView,
    name: str,
    chunk: pa.Table,
    keys: list[bytes],
    ttl: int | None,
) -> bytes:
    """One HSET per key (and an EXPIRE when keys expire) in Redis' wire format."""
    from feast.infra.online_stores.helpers import _mmh3
    from feast.value_type import ValueType

    features = feature_view.features
    pieces = np.empty((chunk.num_rows, len(features) + 2), dtype=object)
    fields = 1 + len(features)
    pieces[:, 0] = [
        b"*%d\r\n$4\r\nHSET\r\n%s" % (2 + 2 * fields, _bulk(k)) for k in keys
    ]
    times = _redis_times(chunk)
    pieces[:, 1] = [_bulk(f"_ts:{name}".encode()) + stamp for stamp in times]
    for position, feature in enumerate(features, start=2):
        field = _bulk(_mmh3(f"{name}:{feature.name}"))
        value_type = feature.dtype.to_value_type()
        column = chunk.column(feature.name)
        if value_type == ValueType.DOUBLE:
            pieces[:, position] = _double_pieces(field, column)
            continue
        codes, protos = distinct_values(column, value_type)
        encoded = np.empty(len(protos), dtype=object)
        encoded[:] = [field + _bulk(proto.SerializeToString()) for proto in protos]
        pieces[:, position] = encoded[codes]
    if ttl:
        expire = np.empty((chunk.num_rows, 1), dtype=object)
        expire[:, 0] = [
            b"*3\r\n$6\r\nEXPIRE\r\n%s%s" % (_bulk(k), _bulk(b"%d" % ttl)) for k in keys
        ]
        pieces = np.hstack([pieces, expire])
    return b"".join(pieces.ravel())


# A double in Feast's value message: field 5 (``double_val``), fixed 64 bits.
_DOUBLE_TAG = b"\x29"


def _double_pieces(field: bytes, column: pa.ChunkedArray) -> np.ndarray:
    """HSET field-value pieces of a double column, without a message per value.

    Most doubles (rates, days) are distinct, so converting each through Feast's
    message classes would dominate the load. The bytes are the message Feast
    writes: the ``double_val`` tag and the little-endian value, and an empty
    message for null and NaN (Feast stores both as unset). The tests compare the
    result with stock materialization.
    """
    values = column.to_numpy().astype("<f8")  # nulls arrive as NaN
    raw = values.tobytes()
    head = field + b"$9\r\n" + _DOUBLE_TAG
    pieces = np.empty(len(values), dtype=object)
    pieces[:] = [head + raw[i : i + 8] + b"\r\n" for i in range(0, len(raw), 8)]
    pieces[np.isnan(values)] = field + _bulk(b"")
    return pieces


def _bulk(value: bytes) -> bytes:
    """A Redis bulk string."""
    return b"$%d\r\n%s\r\n" % (len(value), value)


def _redis_times(chunk: pa.Table) -> list[bytes]:
    """Event times as the bulk strings of Feast's serialised timestamps."""
    from feast.utils import make_tzaware, to_naive_utc
    from google.protobuf.timestamp_pb2 import Timestamp

    column = chunk.column(EVENT_TIMESTAMP).cast(pa.timestamp("us", tz="UTC"))
    encoded = pc.dictionary_encode(column.combine_chunks())
    distinct = []
    for stamp in encoded.dictionary.to_pylist():
        message = Timestamp()
        message.FromDatetime(make_tzaware(to_naive_utc(stamp)))
        distinct.append(_bulk(message.SerializeToString()))
    return [distinct[i] for i in encoded.indices.to_numpy()]


def _record_interval(
    store: FeatureStore, feature_view: FeatureView, table: pa.Table
) -> None:
    """Note the loaded time range in the registry, as Feast's materialize does."""
    if table.num_rows == 0:
        return
    stamps = table.column(EVENT_TIMESTAMP)
    start = pc.min(stamps).as_py()
    end = pc.max(stamps).as_py()
    store.registry.apply_materialization(feature_view, store.project, start, end)


class _ProgressBar:
    """A rich progress bar over keys written, or nothing when not wanted."""

    def __init__(self, view: str, total: int, enabled: bool) -> None:
        self.view, self.total, self.enabled = view, total, enabled
        self._progress: Any = None

    def __enter__(self):
        if not self.enabled:
            return lambda count: None
        from rich.progress import Progress

        self._progress = Progress(transient=False)
        self._progress.start()
        task = self._progress.add_task(f"online {self.view}", total=self.total)
        return lambda count: self._progress.advance(task, count)

    def __exit__(self, *exc_info: object) -> None:
        if self._progress is not None:
            self._progress.stop()
