"""Scale-out configurations against real servers: Redis online store, SQL registry.

Each test uses its own Feast project (Redis) or PostgreSQL schema and removes it
afterwards; it is skipped when its server does not answer on 127.0.0.1.
"""

from __future__ import annotations

import socket
import uuid

import pandas as pd
import pytest

from features.feature_tables import build_feature_tables
from features.settings import Settings
from tests.data.handmade import (
    ALICE,
    AS_OF,
    BORIS,
    SECRET,
    SNAPSHOTS,
    handmade_warehouse,
)

REDIS = ("127.0.0.1", 6379)
POSTGRES = ("127.0.0.1", 5432)


def answers(address: tuple[str, int]) -> bool:
    """Whether a server accepts connections at ``address``."""
    try:
        with socket.create_connection(address, timeout=1):
            return True
    except OSError:
        return False


def remove_redis_keys(projects: list[str]) -> None:
    """Delete the online rows of test projects (Feast ends each key with it)."""
    import redis

    client = redis.Redis(*REDIS)
    for project in projects:
        keys = list(client.scan_iter(match=f"*{project}".encode()))
        if keys:
            client.delete(*keys)
    client.close()


def feast_response(settings: Settings, project: str, keys: list[str]) -> dict:
    """Feast's standard online response for ``keys``, features in name order."""
    from features import store

    feast_store = store.open_store(settings, project)
    response = feast_store.get_online_features(
        features=feast_store.get_feature_service("needs_v1"),
        entity_rows={"card_key": [*keys, "not-a-known-key"]},
    ).to_dict()
    assert response["age"][0] is not None
    return dict(sorted(response.items()))


def layout_response(settings: Settings, project: str, keys: list[str]) -> dict:
    """The direct read of Redis' layout, in the shape of :func:`feast_response`."""
    from features import store
    from features.online_layout import LayoutReader

    reader = LayoutReader(store.open_store(settings, project), "needs_v1")
    rows = reader.rows([*keys, "not-a-known-key"])
    return {name: [row[name] for row in rows] for name in sorted(rows[0])}


def built_settings(root, **overrides) -> Settings:
    settings = Settings(data_dir=root, pseudonym_secret=SECRET.decode(), **overrides)
    warehouse = handmade_warehouse(settings.warehouse_dir)
    build_feature_tables(warehouse, SECRET, settings.feature_dir, SNAPSHOTS)
    return settings


@pytest.mark.redis
@pytest.mark.skipif(not answers(REDIS), reason="no Redis server on 127.0.0.1:6379")
def test_redis_online_store_serves_what_both_materializations_wrote(tmp_path):
    from features import store
    from features.cards import pseudonym

    settings = built_settings(tmp_path, online_store="redis")
    keys = [pseudonym(card, SECRET) for card in (ALICE, BORIS)]
    projects = [f"precision_test_{uuid.uuid4().hex[:10]}" for _ in range(2)]
    try:
        results = []
        for project, engine in zip(projects, ("fast", "feast"), strict=True):
            store.apply(settings, project=project)
            store.materialize(settings, progress=False, engine=engine, project=project)
            results.append(store.online_features(keys, "needs_v1", settings, project))
        pd.testing.assert_frame_equal(results[0], results[1])
        assert feast_response(settings, projects[0], keys) == feast_response(
            settings, projects[1], keys
        )
        for project in projects:
            assert layout_response(settings, project, keys) == feast_response(
                settings, project, keys
            )

        entities = pd.DataFrame({"card_key": keys, "event_timestamp": [AS_OF] * 2})
        offline = store.historical_features(entities, "needs_v1", settings)
        columns = [c for c in offline.columns if c != "event_timestamp"]
        pd.testing.assert_frame_equal(results[0][columns], offline[columns])
    finally:
        remove_redis_keys(projects)


@pytest.mark.postgres
@pytest.mark.skipif(
    not answers(POSTGRES), reason="no PostgreSQL server on 127.0.0.1:5432"
)
def test_postgresql_registry_holds_the_applied_repo(tmp_path):
    import psycopg

    from features import store
    from features.cards import pseudonym

    schema = f"feast_test_{uuid.uuid4().hex[:10]}"
    dsn = "host=127.0.0.1 port=5432 dbname=test"
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(f"CREATE SCHEMA {schema}")
    url = f"postgresql+psycopg://127.0.0.1:5432/test?options=-csearch_path%3D{schema}"
    try:
        settings = built_settings(tmp_path, registry_url=url)
        store.apply(settings)
        store.materialize(settings, progress=False)

        reopened = store.open_store(settings)
        views = sorted(view.name for view in reopened.list_feature_views())
        assert "card_profile_fv" in views and len(views) == 6
        assert reopened.get_feature_service("offers_v1").name == "offers_v1"
        online = store.online_features(
            [pseudonym(ALICE, SECRET)], "needs_v1", settings, store=reopened
        )
        assert online.loc[0, "age"] == 35
        with psycopg.connect(dsn) as connection:
            tables = connection.execute(
                "SELECT count(*) FROM information_schema.tables "
                "WHERE table_schema = %s",
                (schema,),
            ).fetchone()
        assert tables is not None and tables[0] > 0
    finally:
        with psycopg.connect(dsn, autocommit=True) as connection:
            connection.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
