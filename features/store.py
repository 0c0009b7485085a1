"""The Feast feature store: configure, apply, materialize and read features.

The repository's objects come from :mod:`features.repo.definitions`; the
``feature_store.yaml`` is rendered into ``Settings.feast_dir`` from the settings, so
the data folder, the online store (SQLite or Redis) and the registry (a file or
PostgreSQL) are configurable. Training sets come from point-in-time joins through
one of two engines with identical output: Feast's own retrieval, or a DuckDB ASOF
join over the same parquet tables.
"""

from __future__ import annotations

import functools
import gc
import logging
import threading
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from features.errors import ConfigurationError, InputError, NotReadyError
from features.feature_tables import VIEW_KEYS
from features.schema import EVENT_TIMESTAMP
from features.settings import Settings

if TYPE_CHECKING:
    from feast import FeatureStore

logger = logging.getLogger(__name__)

DEFAULT_PROJECT = "precision_outreach"
ENGINES = ("duckdb", "feast")
MATERIALIZE_ENGINES = ("fast", "feast")
_ROW = "__entity_row"


def render_config(settings: Settings, project: str = DEFAULT_PROJECT) -> dict[str, Any]:
    """The ``feature_store.yaml`` contents for these settings.

    Raises:
        ConfigurationError: when the online store is neither SQLite nor Redis.
    """
    feast_dir = settings.feast_dir.resolve()
    if settings.registry_url:
        registry: dict[str, Any] = {
            "registry_type": "sql",
            "path": settings.registry_url,
            "cache_ttl_seconds": 60,
        }
    else:
        registry = {"path": str(feast_dir / "registry.db"), "cache_ttl_seconds": 60}

    if settings.online_store == "sqlite":
        online: dict[str, Any] = {
            "type": "sqlite",
            "path": str(feast_dir / "online_store.db"),
        }
    elif settings.online_store == "redis":
        online = {"type": "redis", "connection_string": settings.redis_url}
    else:
        raise ConfigurationError(
            f"online_store: expected 'sqlite' or 'redis', got "
            f"{settings.online_store!r}; set PRECISION_ONLINE_STORE to one of them"
        )
    return {
        "project": project,
        "provider": "local",
        "registry": registry,
        "online_store": online,
        "offline_store": {"type": "file"},
        "entity_key_serialization_version": 3,
    }


def open_store(settings: Settings, project: str = DEFAULT_PROJECT) -> FeatureStore:
    """Render ``feature_store.yaml`` into the Feast folder and open the store."""
    from feast import FeatureStore

    feast_dir = settings.feast_dir
    feast_dir.mkdir(parents=True, exist_ok=True)
    config_path = feast_dir / "feature_store.yaml"
    text = yaml.safe_dump(render_config(settings, project), sort_keys=False)
    if not config_path.exists() or config_path.read_text("utf-8") != text:
        aside = feast_dir / ".feature_store.yaml.partial"
        aside.write_text(text, "utf-8")
        aside.replace(config_path)
    return FeatureStore(repo_path=str(feast_dir))


def repo_objects(settings: Settings) -> dict[str, Any]:
    """The repository's Feast objects over the feature tables of ``settings``."""
    from features.repo.definitions import feature_repo

    return feature_repo(settings.feature_dir)


def apply(settings: Settings, project: str = DEFAULT_PROJECT) -> FeatureStore:
    """Register entities, feature views and services; create online tables.

    Raises:
        NotReadyError: when the feature tables have not been built yet.
    """
    _require_tables(settings)
    store = open_store(settings, project)
    repo = repo_objects(settings)
    objects = [*repo["entities"], *repo["views"].values(), *repo["services"].values()]
    started = time.perf_counter()
    store.apply(objects)
    logger.info(
        "applied %d Feast objects to project %s in %.1f s",
        len(objects),
        project,
        time.perf_counter() - started,
    )
    return store


def _require_tables(settings: Settings) -> None:
    missing = [
        view
        for view in VIEW_KEYS
        if not (settings.feature_dir / f"{view}.parquet").exists()
    ]
    if missing:
        raise NotReadyError(
            f"expected feature tables in {settings.feature_dir}, missing "
            f"{', '.join(missing)}; run 'precision features build' first"
        )


def _service_views(service: str) -> tuple[str, ...]:
    from features.repo.definitions import SERVICE_VIEWS

    if service not in SERVICE_VIEWS:
        raise InputError(
            f"service: expected one of {sorted(SERVICE_VIEWS)}, got {service!r}"
        )
    return SERVICE_VIEWS[service]


# Materialization ---------------------------------------------------------------


def materialize(
    settings: Settings,
    progress: bool = True,
    engine: str = "fast",
    project: str = DEFAULT_PROJECT,
    views: Sequence[str] | None = None,
) -> dict[str, int]:
    """Load the latest row of every key into the online store.

    Args:
        settings: where the feature tables and the stores are.
        progress: show a progress bar on standard error.
        engine: ``"fast"`` writes the latest rows in bulk in Feast's own online
            layout; ``"feast"`` runs Feast's stock materialization.
        project: the Feast project.
        views: view names to load; every view when omitted.

    Returns:
        Rows written per view.

    Raises:
        InputError: for an unknown engine or view.
    """
    if engine not in MATERIALIZE_ENGINES:
        raise InputError(
            f"engine: expected one of {MATERIALIZE_ENGINES}, got {engine!r}"
        )
    names = list(views or VIEW_KEYS)
    unknown = sorted(set(names) - set(VIEW_KEYS))
    if unknown:
        raise InputError(f"views: expected names from {list(VIEW_KEYS)}, got {unknown}")
    _require_tables(settings)
    store = open_store(settings, project)

    written = {}
    for view in names:
        started = time.perf_counter()
        if engine == "feast":
            written[view] = _materialize_stock(store, settings, view)
        else:
            from features.online_writer import write_latest_rows

            written[view] = write_latest_rows(
                store, settings.feature_dir / f"{view}.parquet", view, progress
            )
        logger.info(
            "materialized %s (%s): %d keys in %.1f s",
            view,
            engine,
            written[view],
            time.perf_counter() - started,
        )
    return written


def _materialize_stock(store: FeatureStore, settings: Settings, view: str) -> int:
    """Feast's own materialization over the whole time range of the table."""
    path = settings.feature_dir / f"{view}.parquet"
    stamps = pq.read_table(path, columns=[EVENT_TIMESTAMP]).column(0)
    start = pa.compute.min(stamps).as_py()
    end = pa.compute.max(stamps).as_py() + pd.Timedelta(seconds=1)
    store.materialize(start, end, feature_views=[f"{view}_fv"])
    keys = pq.read_table(path, columns=[VIEW_KEYS[view]]).column(0)
    return len(pa.compute.unique(keys))


# Point-in-time training sets ------------------------------------------------------


def historical_features(
    entity_df: pd.DataFrame,
    service: str,
    settings: Settings,
    engine: str = "duckdb",
    project: str = DEFAULT_PROJECT,
) -> pd.DataFrame:
    """Point-in-time correct features of a feature service for every entity row.

    Each row gets, per feature view, the latest feature row whose
    ``event_timestamp`` is at or before the row's ``event_timestamp`` (and a feature
    row at ``t`` was computed from events before ``t``). Naive times are taken as
    UTC; other zones are converted.

    Args:
        entity_df: join keys of the service's views, ``event_timestamp`` and any
            other columns (offer ids, labels), kept as they are.
        service: a feature service name, e.g. ``"needs_v1"``.
        settings: where the feature tables (and, for Feast, the store) are.
        engine: ``"duckdb"`` (an ASOF join on the parquet tables) or ``"feast"``
            (Feast's ``get_historical_features``); both give identical frames.
        project: the Feast project (``engine="feast"`` only).

    Returns:
        Exactly the rows given, in the given order, with the service's features
        appended.

    Raises:
        InputError: when a join key or the timestamp column is missing, or the
            engine or service is unknown.
    """
    if engine not in ENGINES:
        raise InputError(f"engine: expected one of {ENGINES}, got {engine!r}")
    views = _service_views(service)
    _check_entity_frame(entity_df, views)
    _require_tables(settings)
    started = time.perf_counter()
    if engine == "duckdb":
        joined = _historical_duckdb(entity_df, views, settings.feature_dir)
    else:
        joined = _historical_feast(entity_df, service, views, settings, project)
    result = _canonical(joined, views)
    logger.debug(
        "historical features (%s) for %d rows in %.2f s",
        engine,
        len(result),
        time.perf_counter() - started,
    )
    return result


def _check_entity_frame(entity_df: pd.DataFrame, views: Sequence[str]) -> None:
    needed = [EVENT_TIMESTAMP, *dict.fromkeys(VIEW_KEYS[view] for view in views)]
    missing = [column for column in needed if column not in entity_df.columns]
    if missing:
        raise InputError(
            f"entity_df: expected columns {needed}, missing {missing}; add them "
            f"(got {list(entity_df.columns)})"
        )
    if _ROW in entity_df.columns:
        raise InputError(f"entity_df: column name {_ROW!r} is reserved; rename it")


def utc_times(values: pd.Series) -> pd.Series:
    """Timestamps as ``datetime64[ns, UTC]``; naive values are taken as UTC."""
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return values.dt.tz_convert("UTC").astype("datetime64[ns, UTC]")
    parsed = pd.to_datetime(values)
    if isinstance(parsed.dtype, pd.DatetimeTZDtype):
        return parsed.dt.tz_convert("UTC").astype("datetime64[ns, UTC]")
    return parsed.dt.tz_localize("UTC").astype("datetime64[ns, UTC]")


def _entity_probe(entity_df: pd.DataFrame, views: Sequence[str]) -> pd.DataFrame:
    """The join keys as text, UTC times and row numbers of entity rows, for DuckDB."""
    keys = dict.fromkeys(VIEW_KEYS[view] for view in views)
    probe = pd.DataFrame({key: entity_df[key].astype(str) for key in keys})
    probe[EVENT_TIMESTAMP] = utc_times(entity_df[EVENT_TIMESTAMP]).to_numpy()
    probe[_ROW] = np.arange(len(entity_df))
    return probe


def _historical_duckdb(
    entity_df: pd.DataFrame, views: Sequence[str], feature_dir: Path
) -> pd.DataFrame:
    """One ASOF LEFT JOIN per view, directly on the feature parquet files."""
    from features.repo.definitions import feature_names

    probe = _entity_probe(entity_df, views)

    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.register("entity_rows", probe)
        selects, joins = [], []
        for index, view in enumerate(views):
            alias = f"v{index}"
            path = str((feature_dir / f"{view}.parquet").resolve()).replace("'", "''")
            key = VIEW_KEYS[view]
            selects += [f'{alias}."{name}"' for name in feature_names(view)]
            joins.append(
                f"ASOF LEFT JOIN read_parquet('{path}') {alias} "
                f"ON e.{key} = {alias}.{key} "
                f"AND e.{EVENT_TIMESTAMP} >= {alias}.{EVENT_TIMESTAMP}"
            )
        sql = (
            f"SELECT e.{_ROW}, {', '.join(selects)} FROM entity_rows e "
            f"{' '.join(joins)} ORDER BY e.{_ROW}"
        )
        features = con.sql(sql).df()
    finally:
        con.close()
    features = features.drop(columns=[_ROW])
    features.index = entity_df.index
    return pd.concat([entity_df, features], axis=1)


def _historical_feast(
    entity_df: pd.DataFrame,
    service: str,
    views: Sequence[str],
    settings: Settings,
    project: str,
) -> pd.DataFrame:
    """Feast's retrieval per join key on unique (key, time) rows, joined back.

    Feast's file offline store keeps one row per join key and time of each view
    (rows of one card at one time with different offers are merged into one) and
    drops rows that no feature row matches. Asking, per join key, only for unique
    (key, time) pairs and joining the answers back keeps every row given.
    """
    from features.repo.definitions import feature_names

    store = open_store(settings, project)
    probe = pd.DataFrame({EVENT_TIMESTAMP: utc_times(entity_df[EVENT_TIMESTAMP])})
    probe.index = entity_df.index
    features = []
    for key, key_views in _views_by_key(views).items():
        probe[key] = entity_df[key].astype(str)
        pairs = probe[[key, EVENT_TIMESTAMP]].drop_duplicates().reset_index(drop=True)
        refs = [
            f"{view}_fv:{name}" for view in key_views for name in feature_names(view)
        ]
        found = store.get_historical_features(entity_df=pairs, features=refs).to_df()
        found[key] = found[key].astype(str)
        found[EVENT_TIMESTAMP] = utc_times(found[EVENT_TIMESTAMP])
        names = [ref.split(":")[1] for ref in refs]
        found = found[[key, EVENT_TIMESTAMP, *names]]
        _check_unique(found, [key, EVENT_TIMESTAMP], service)
        joined = probe[[key, EVENT_TIMESTAMP]].merge(
            found, on=[key, EVENT_TIMESTAMP], how="left"
        )
        joined.index = entity_df.index
        features.append(joined[names])
    return pd.concat([entity_df, *features], axis=1)


def _views_by_key(views: Sequence[str]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for view in views:
        grouped.setdefault(VIEW_KEYS[view], []).append(view)
    return grouped


def features_at_snapshots(
    entities: pd.DataFrame, service: str, settings: Settings
) -> pd.DataFrame | None:
    """The point-in-time join read only at the rows' own snapshot times.

    Feature tables hold one row per key and snapshot, and a training run joins
    at snapshot times (``training.pipeline.ensure_snapshots``). When every entity
    row finds, in every view, one feature row stamped exactly at its own time,
    that row is the one the point-in-time join (the latest at or before the
    time) picks as well; filtering the tables to those times skips the other
    snapshots' rows. The frame then goes through the store's own dtype
    normalisation, so it equals :func:`historical_features` with either engine.

    Returns:
        The entity rows with the service's features, or ``None`` when some row
        has no feature row at exactly its time (the caller then takes the
        point-in-time join).
    """
    from features.repo.definitions import SERVICE_VIEWS, feature_names

    views = SERVICE_VIEWS[service]
    keys = list(dict.fromkeys(VIEW_KEYS[view] for view in views))
    if len(entities) == 0 or any(k not in entities.columns for k in keys):
        return None
    probe = _entity_probe(entities, views)
    times = ", ".join(
        f"TIMESTAMPTZ '{pd.Timestamp(t).isoformat()}'"
        for t in probe[EVENT_TIMESTAMP].unique()
    )

    selects, joins, found = [], [], []
    for index, view in enumerate(views):
        alias, key = f"v{index}", VIEW_KEYS[view]
        path = str((settings.feature_dir / f"{view}.parquet").resolve()).replace(
            "'", "''"
        )
        selects += [f'{alias}."{name}"' for name in feature_names(view)]
        found.append(f"{alias}.{key} IS NOT NULL AS _found_{index}")
        joins.append(
            f"LEFT JOIN (SELECT * FROM read_parquet('{path}') "
            f"WHERE {EVENT_TIMESTAMP} IN ({times})) {alias} "
            f"ON e.{key} = {alias}.{key} "
            f"AND e.{EVENT_TIMESTAMP} = {alias}.{EVENT_TIMESTAMP}"
        )
    sql = (
        f"SELECT {', '.join([*selects, *found])} FROM entity_rows e "
        f"{' '.join(joins)} ORDER BY e.{_ROW}"
    )
    connection = duckdb.connect()
    try:
        connection.execute("SET TimeZone = 'UTC'")
        connection.register("entity_rows", probe)
        features = connection.sql(sql).df()
    finally:
        connection.close()
    flags = [f"_found_{index}" for index in range(len(views))]
    if len(features) != len(entities) or not features[flags].all(axis=None):
        return None
    features = features.drop(columns=flags)
    features.index = entities.index
    return _canonical(pd.concat([entities, features], axis=1), views)


def _check_unique(found: pd.DataFrame, columns: list[str], service: str) -> None:
    if found.duplicated(subset=columns).any():
        raise NotReadyError(
            f"point-in-time join for {service}: expected one feature row per "
            f"{columns}, got duplicates; the feature tables hold a key twice in one "
            "snapshot, rebuild them with 'precision features build'"
        )


def _canonical(frame: pd.DataFrame, views: Sequence[str]) -> pd.DataFrame:
    """Give every feature column one dtype whichever engine or store produced it."""
    from feast.types import Array, Float64, Int64, UnixTimestamp

    from features.repo.definitions import VIEW_FIELDS

    frame = frame.copy()
    for view in views:
        for field in VIEW_FIELDS[view]:
            if field.name not in frame.columns:
                continue
            values = frame[field.name]
            if field.dtype == Int64:
                frame[field.name] = pd.to_numeric(values).astype("Int64")
            elif field.dtype == Float64:
                frame[field.name] = pd.to_numeric(values).astype("float64")
            elif field.dtype == UnixTimestamp:
                frame[field.name] = utc_times(values)
            elif isinstance(field.dtype, Array):
                frame[field.name] = [_as_list(value) for value in values]
            else:
                frame[field.name] = values.astype(object).where(values.notna(), None)
    return frame


def _as_list(value: Any) -> list[str] | None:
    if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)):
        return None
    return [str(item) for item in value]


# Online features ----------------------------------------------------------------


def online_features(
    card_keys: Sequence[str] | pd.DataFrame,
    service: str,
    settings: Settings,
    project: str = DEFAULT_PROJECT,
    store: FeatureStore | None = None,
) -> pd.DataFrame:
    """Latest features of a service from the online store, one row per entity.

    The rows come from the online store's own ``online_read`` (Feast's reader for
    SQLite, Redis or any other store), one call per feature view; the values go
    straight into typed columns. Feast's ``get_online_features`` would first copy
    them into a response message and then convert each value back to Python,
    which is most of its cost beyond the store's read.

    Args:
        card_keys: card pseudonyms, or a frame of the service's join keys (e.g.
            ``card_key`` and ``offer_id`` for ``offers_v1``).
        service: a feature service name.
        settings: where the stores are.
        project: the Feast project.
        store: an open store to reuse (saves re-reading the registry).

    Returns:
        The join keys and features, in the order given, with the dtypes of
        :func:`historical_features`; unknown keys get nulls.

    Raises:
        InputError: when a join key the service needs is missing.
    """
    if isinstance(card_keys, pd.DataFrame):
        entities: Any = card_keys
    else:
        entities = {"card_key": card_keys}
    needed = _service_keys(service)
    missing = [key for key in needed if key not in entities]
    if missing:
        raise InputError(
            f"{service} reads features keyed by {needed}; missing {missing}: pass a "
            "frame with those columns"
        )
    store = store or _shared_store(settings, project)
    plan = _read_plan(store, service)
    keys = {key: _key_strings(entities[key]) for key in needed}

    cells = [view.read(store.config, keys[view.join_key]) for view in plan.views]
    columns: dict[str, Any] = {key: np.array(keys[key], dtype=object) for key in needed}
    columns.update(plan.columns(np.hstack(cells)))
    return _frame(columns)


def _frame(columns: dict[str, Any]) -> pd.DataFrame:
    """A frame of ready, equally long, typed columns.

    The columns are built with their final dtypes, so pandas' checks and
    conversions in ``DataFrame(dict)`` (half the cost of reading one card) are
    skipped; a pandas without ``_from_arrays`` gets the public constructor.
    """
    arrays = list(columns.values())
    length = len(arrays[0]) if arrays else 0
    build = getattr(pd.DataFrame, "_from_arrays", None)
    if build is None:
        return pd.DataFrame(columns, copy=False)
    return build(
        arrays,
        columns=list(columns),
        index=pd.RangeIndex(length),
        verify_integrity=False,
    )


class _ViewRead:
    """How to read one feature view of a service from the online store."""

    def __init__(self, online_store: Any, feature_view: Any, fields: list) -> None:
        self.online_store = online_store
        self.feature_view = feature_view
        self.join_key = VIEW_KEYS[feature_view.name.removesuffix("_fv")]
        self.fields = fields
        self.names = [field.name for field in fields]

    def read(self, config: Any, values: list[str]) -> np.ndarray:
        """Plain values of this view's features, one row per join key value."""
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        distinct = list(dict.fromkeys(values))
        entity_keys = [
            EntityKey(join_keys=[self.join_key], entity_values=[Value(string_val=v)])
            for v in distinct
        ]
        # A copy: Feast's Redis reader appends to the list of names it is given.
        found = self.online_store.online_read(
            config, self.feature_view, entity_keys, list(self.names)
        )

        by_value = {value: row for value, (_, row) in zip(distinct, found, strict=True)}
        rows = [by_value[value] or _NO_ROW for value in values]
        cells = np.empty((len(rows), len(self.names)), dtype=object)
        cells.ravel()[:] = [
            _python_value(row.get(name)) for row in rows for name in self.names
        ]
        return cells


class _ReadPlan:
    """The feature views of one service, resolved once per open store."""

    def __init__(self, store: FeatureStore, service: str) -> None:
        from feast.infra.online_stores.helpers import get_online_store_from_config
        from feast.types import Array, Float64, Int64, UnixTimestamp

        from features.repo.definitions import VIEW_FIELDS

        online_store = get_online_store_from_config(store.config.online_store)
        feature_service = store.get_feature_service(service)
        self.views = []
        for projection in feature_service.feature_view_projections:
            feature_view = store.get_feature_view(projection.name)
            view = projection.name.removesuffix("_fv")
            by_name = {field.name: field for field in VIEW_FIELDS[view]}
            fields = [by_name[feature.name] for feature in projection.features]
            self.views.append(_ViewRead(online_store, feature_view, fields))

        fields = [field for view in self.views for field in view.fields]
        self.names = [field.name for field in fields]
        kinds = {Int64: "int", Float64: "float", UnixTimestamp: "time"}
        found = [
            "list" if isinstance(field.dtype, Array) else kinds.get(field.dtype, "obj")
            for field in fields
        ]
        self.positions = {
            kind: [i for i, one in enumerate(found) if one == kind]
            for kind in ("int", "float", "time", "list", "obj")
        }

    def columns(self, cells: np.ndarray) -> dict[str, Any]:
        """Columns with the dtypes :func:`_canonical` gives, whole kinds at once."""
        missing = np.equal(cells, None)
        columns: dict[str, Any] = {}
        ints = self.positions["int"]
        if ints:
            numbers = np.where(missing[:, ints], 0, cells[:, ints]).astype(np.int64)
            numbers, masks = numbers.T.copy(), missing[:, ints].T.copy()
            for index, position in enumerate(ints):
                columns[self.names[position]] = pd.arrays.IntegerArray(
                    numbers[index], masks[index]
                )
        floats = self.positions["float"]
        if floats:
            reals = np.where(missing[:, floats], np.nan, cells[:, floats])
            reals = reals.astype(np.float64).T.copy()
            for index, position in enumerate(floats):
                columns[self.names[position]] = reals[index]
        for position in self.positions["time"]:
            columns[self.names[position]] = _time_column(cells[:, position])
        for position in self.positions["list"]:
            columns[self.names[position]] = _list_column(cells[:, position])
        for position in self.positions["obj"]:
            columns[self.names[position]] = cells[:, position]
        return {name: columns[name] for name in self.names}


_NO_ROW: dict[str, Any] = {}
_READ_PLANS: weakref.WeakKeyDictionary[Any, dict[str, _ReadPlan]] = (
    weakref.WeakKeyDictionary()
)
_READ_PLANS_LOCK = threading.Lock()


def _key_strings(values: Any) -> list[str]:
    if isinstance(values, pd.Series):
        return values.astype(str).tolist()
    return [value if isinstance(value, str) else str(value) for value in values]


@functools.cache
def _service_keys(service: str) -> list[str]:
    """The join keys of a service's views, in view order."""
    return list(dict.fromkeys(VIEW_KEYS[view] for view in _service_views(service)))


def _read_plan(store: FeatureStore, service: str) -> _ReadPlan:
    """The read plan of ``service`` on ``store``, built on first use."""
    plans = _READ_PLANS.get(store)
    if plans is None or service not in plans:
        with _READ_PLANS_LOCK:
            plans = _READ_PLANS.setdefault(store, {})
            if service not in plans:
                plans[service] = _ReadPlan(store, service)
    return plans[service]


def _python_value(proto: Any) -> Any:
    """The plain value of a Feast value message; ``None`` when unset."""
    if proto is None:
        return None
    kind = proto.WhichOneof("val")
    if kind is None or kind == "null_val":
        return None
    return getattr(proto, kind)


def _time_column(seconds: np.ndarray) -> pd.Series:
    """Feast timestamps (seconds) as UTC times; unset or null ones as NaT."""
    values = pd.array(
        [None if v is None or v == _NULL_SECONDS else v for v in seconds],
        dtype="Int64",
    )
    return pd.to_datetime(values, unit="s", utc=True).astype("datetime64[ns, UTC]")


def _list_column(messages: np.ndarray) -> np.ndarray:
    """Feast list messages as lists of strings; unset ones as ``None``."""
    lists = np.empty(len(messages), dtype=object)
    lists[:] = [None if v is None else [str(i) for i in v.val] for v in messages]
    return lists


# Feast's marker of a null timestamp inside a value message.
_NULL_SECONDS = -9223372036854775808


_OPEN_STORES: dict[tuple[str, str], FeatureStore] = {}
_OPEN_STORES_LOCK = threading.Lock()


def _shared_store(settings: Settings, project: str) -> FeatureStore:
    """One open store per Feast folder and project, reused by every online read."""
    name = (str(settings.feast_dir), project)
    if name not in _OPEN_STORES:
        with _OPEN_STORES_LOCK:
            if name not in _OPEN_STORES:
                _OPEN_STORES[name] = open_store(settings, project)
    return _OPEN_STORES[name]


def prepare_online_reads(
    settings: Settings,
    services: Sequence[str] = ("needs_v1",),
    project: str = DEFAULT_PROJECT,
) -> FeatureStore:
    """Open the store, warm each service's read path and freeze what is alive.

    Full garbage collections walk every object alive; after start-up those are
    the registry, the models and Feast's own machinery, none of which will become
    garbage. Freezing them keeps the collector's work per request proportional
    to the request, which removes most of the tail latency of online reads.

    Returns:
        The open store that :func:`online_features` reuses for these settings.
    """
    store = _shared_store(settings, project)
    for service in services:
        views = _service_views(service)
        keys = list(dict.fromkeys(VIEW_KEYS[view] for view in views))
        online_features(
            pd.DataFrame({key: [""] for key in keys}), service, settings, project, store
        )
    gc.collect()
    gc.freeze()
    logger.info(
        "online reads warmed for %s; %d objects frozen",
        list(services),
        gc.get_freeze_count(),
    )
    return store
