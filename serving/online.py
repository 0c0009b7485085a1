"""Online features for the service: one open Feast store, rows as plain values.

The service reads card features from the Feast online store on every request
that misses the freshness-bounded cache. Four things make that read cheap:

- one :class:`feast.FeatureStore` stays open for the life of the process, with a
  registry cache that never expires on its own (``/admin/reload`` reopens it), so
  a read never waits for a registry refresh;
- the feature service is resolved once, when the reader is built;
- on SQLite and a single Redis server the rows are read straight from the
  layout Feast keeps there (:mod:`features.online_layout`), each distinct stored
  value decoded once with Feast's own conversion; other online stores go through
  ``get_online_features``;
- the response stays plain Python values (one dictionary per card), which the
  compiled scorer reads directly; a typed frame is built only where a caller
  needs one (:func:`card_frame`).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from features.errors import NotReadyError
from features.schema import CARD_KEY
from features.settings import Settings

logger = logging.getLogger(__name__)

CardRow = dict[str, Any]
RowFetch = Callable[[list[str]], list[CardRow]]


def open_serving_store(settings: Settings) -> Any:
    """The Feast store of ``settings`` with a registry cache that never expires.

    Raises:
        NotReadyError: when the Feast repo has not been built.
    """
    from feast import FeatureStore
    from feast.repo_config import RepoConfig

    from features.store import open_store, render_config

    try:
        open_store(settings)  # renders feature_store.yaml, checks the repo opens
        config = render_config(settings)
        config["registry"] = config["registry"] | {"cache_ttl_seconds": 0}
        repo_config = RepoConfig(repo_path=settings.feast_dir.resolve(), **config)
        return FeatureStore(config=repo_config)
    except Exception as error:  # Feast raises many kinds; all mean "not built"
        raise NotReadyError(
            f"expected a Feast repo in {settings.feast_dir}, could not open it "
            f"({error}); run 'precision features build'"
        ) from error


class OnlineReader:
    """Reads one feature service for many entities in a single online call.

    Args:
        store: an open Feast store.
        service: the feature service name (resolved once, here).
    """

    def __init__(self, store: Any, service: str) -> None:
        from features.online_layout import LayoutReader, supports

        self.store = store
        self.service_name = service
        self.service = store.get_feature_service(service)
        self.layout = LayoutReader(store, service) if supports(store) else None

    def columns(self, entity_rows: dict[str, list[str]]) -> dict[str, list[Any]]:
        """Feature values by column, in the order of ``entity_rows``."""
        response = self.store.get_online_features(
            features=self.service, entity_rows=entity_rows
        )
        return response.to_dict()

    def card_rows(self, card_keys: list[str]) -> list[CardRow]:
        """One dictionary of plain values per card key; unknown keys get None."""
        if self.layout is not None:
            return self.layout.rows(list(card_keys))
        columns = self.columns({CARD_KEY: list(card_keys)})
        names = list(columns)
        return [
            dict(zip(names, values, strict=True))
            for values in zip(*columns.values(), strict=True)
        ]


class FeatureCache:
    """Online feature rows per card key, reused for at most ``max_age`` seconds.

    Args:
        fetch: reads rows of card keys from the online store (one row per key,
            in order, None values for unknown keys).
        max_age: freshness bound in seconds; 0 reads the store every time.
        max_size: most cards kept (the oldest entries leave first).
        clock: monotonic seconds (injectable for tests).
    """

    def __init__(
        self,
        fetch: RowFetch,
        max_age: float,
        max_size: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fetch = fetch
        self.max_age = max_age
        self.max_size = max_size
        self.clock = clock
        self._rows: OrderedDict[str, tuple[float, CardRow]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def rows(self, card_keys: list[str]) -> list[CardRow]:
        """Rows of ``card_keys`` (unique), in order; one store read for the misses."""
        now = self.clock()
        missing = [key for key in card_keys if not self._fresh(key, now)]
        self.hits += len(card_keys) - len(missing)
        self.misses += len(missing)

        fetched: dict[str, CardRow] = {}
        if missing:
            fetched = dict(zip(missing, self.fetch(missing), strict=True))
            if self.max_age > 0 and self.max_size > 0:
                for key, row in fetched.items():
                    self._store(key, now, row)
        return [
            fetched[key] if key in fetched else self._rows[key][1] for key in card_keys
        ]

    def get(self, card_keys: list[str]) -> pd.DataFrame:
        """Rows of ``card_keys`` as a typed frame (see :func:`card_frame`)."""
        return card_frame(self.rows(card_keys))

    def clear(self) -> None:
        """Forget every cached row."""
        self._rows.clear()

    def _fresh(self, key: str, now: float) -> bool:
        entry = self._rows.get(key)
        return entry is not None and now - entry[0] < self.max_age

    def _store(self, key: str, now: float, row: CardRow) -> None:
        self._rows[key] = (now, row)
        self._rows.move_to_end(key)
        while len(self._rows) > self.max_size:
            self._rows.popitem(last=False)


def card_frame(rows: Sequence[CardRow]) -> pd.DataFrame:
    """Card rows as a frame with the dtypes of the offline tables.

    Integer features become nullable ``Int64``, floats ``float64`` (None as NaN),
    lists stay lists and text stays text with None for missing, whether or not a
    value is missing in this particular batch.
    """
    from feast.types import Array, Float64, Int64

    from features.repo.definitions import VIEW_FIELDS

    types = {f.name: f.dtype for fields in VIEW_FIELDS.values() for f in fields}
    names = [
        name
        for name in dict.fromkeys(name for row in rows for name in row)
        if not name.startswith("__")
    ]
    data: dict[str, Any] = {}
    for name in names:
        values = [row.get(name) for row in rows]
        dtype = types.get(name)
        if dtype == Int64:
            data[name] = pd.array(values, dtype="Int64")
        elif dtype == Float64:
            data[name] = np.array(
                [np.nan if v is None else v for v in values], dtype=np.float64
            )
        elif isinstance(dtype, Array):
            data[name] = [None if v is None else list(v) for v in values]
        else:
            data[name] = pd.Series(values, dtype=object)
    return pd.DataFrame(data, index=pd.RangeIndex(len(rows)))
