"""The card-keyed warehouse: parquet files in one folder, queried with DuckDB.

Every write is validated in full (per-table rules and references across tables,
stored tables included) before any file is touched. Files are then written aside
under temporary names in the same folder and renamed over the old ones, so a refused
or interrupted write never leaves a half-written table behind.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features.errors import NotFoundError, NotReadyError, WarehouseValidationError
from features.schema import (
    ORACLE_NEEDS_FILE,
    ORACLE_OFFERS_FILE,
    TABLES,
    TABLES_BY_NAME,
)
from features.times import utc_timestamp
from features.validation import (
    KeyLookup,
    normalize_table,
    table_spec,
    validate_tables,
)

logger = logging.getLogger(__name__)

META_FILE = "_meta.json"
ORACLE_FILES = (ORACLE_NEEDS_FILE, ORACLE_OFFERS_FILE)
_TEMP_PREFIX = ".writing-"


class Warehouse:
    """Parquet tables of the warehouse in ``directory``, one file per table.

    Args:
        directory: the warehouse folder (``Settings.warehouse_dir``); created on the
            first write.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def __repr__(self) -> str:
        return f"Warehouse({str(self.directory)!r})"

    def path(self, name: str) -> Path:
        """The file of table ``name``."""
        return self.directory / table_spec(name).file_name

    def exists(self) -> bool:
        """Whether every warehouse table and the metadata file are stored."""
        stored = all(self.path(t.name).exists() for t in TABLES)
        return stored and (self.directory / META_FILE).exists()

    def stored_tables(self) -> list[str]:
        """Names of the tables that have a file, in schema order."""
        return [t.name for t in TABLES if self.path(t.name).exists()]

    def write_tables(
        self,
        tables: Mapping[str, pd.DataFrame],
        meta: Mapping[str, Any] | None = None,
        *,
        extra_files: Mapping[str, pd.DataFrame] | None = None,
        replace: bool = False,
    ) -> dict[str, pd.DataFrame]:
        """Validate the tables, then store them all or none.

        Args:
            tables: frames by table name; a subset of the schema is allowed when the
                tables it references are stored already.
            meta: metadata merged into ``_meta.json`` (``as_of`` as an ISO time);
                row counts of every stored table are kept there too.
            extra_files: frames stored beside the tables under the given file names
                (the generator's oracle files), without schema checks.
            replace: the batch is the whole warehouse: stored tables and extra files
                not in it are removed after the new files are in place.

        Returns:
            The normalised tables as stored.

        Raises:
            WarehouseValidationError: when a rule fails; no file was changed.
        """
        stored = set() if replace else set(self.stored_tables()) - set(tables)
        normalized = validate_tables(tables, lookup=self._stored_keys(stored))
        self._check_stored_dependents(normalized, stored)

        files = {
            table_spec(name).file_name: frame for name, frame in normalized.items()
        }
        files.update(extra_files or {})
        self.directory.mkdir(parents=True, exist_ok=True)
        self._write_aside_and_rename(files)

        if replace:
            self._remove_files_not_in(set(files))
        self._write_meta(meta, merge=not replace)
        logger.info(
            "stored %d table(s) in %s: %s",
            len(normalized),
            self.directory,
            ", ".join(f"{n}={len(f)}" for n, f in normalized.items()),
        )
        return normalized

    def _stored_keys(self, stored: set[str]) -> KeyLookup:
        """A lookup of key values in stored tables for reference checks."""

        def lookup(reference: str) -> pd.Index | None:
            table_name, column = reference.split(".")
            if table_name not in stored:
                return None
            values = pq.read_table(self.path(table_name), columns=[column])
            return pd.Index(values.column(column).to_pandas().unique())

        return lookup

    def _check_stored_dependents(
        self, batch: Mapping[str, pd.DataFrame], stored: set[str]
    ) -> None:
        """Refuse a batch that would leave stored rows pointing at removed keys."""
        for table in TABLES:
            if table.name not in stored:
                continue
            for column in table.columns:
                target = (column.references or ".").split(".")
                if target[0] not in batch:
                    continue
                values = pq.read_table(self.path(table.name), columns=[column.name])
                held = pd.Index(
                    values.column(column.name).to_pandas().dropna().unique()
                )
                missing = held.difference(pd.Index(batch[target[0]][target[1]]))
                if len(missing) > 0:
                    raise WarehouseValidationError(
                        table.file_name,
                        column.name,
                        "reference",
                        f"expected the new {target[0]} to keep every {target[1]} "
                        f"that stored {table.name} points at; {len(missing)} would be "
                        f"lost (e.g. {list(missing[:5])}); write {table.name} in the "
                        "same batch",
                    )

    def _write_aside_and_rename(self, files: Mapping[str, pd.DataFrame]) -> None:
        """Write every file under a temporary name, then rename each into place."""
        token = uuid.uuid4().hex[:8]
        temporary: dict[str, Path] = {}
        try:
            for file_name, frame in files.items():
                temp_path = self.directory / f"{_TEMP_PREFIX}{token}-{file_name}"
                temporary[file_name] = temp_path
                frame.to_parquet(temp_path, index=False)
        except BaseException:
            for temp_path in temporary.values():
                temp_path.unlink(missing_ok=True)
            raise

        # Each rename is atomic, but there is no lock and no journal: a crash between
        # two renames, or two concurrent writers, can leave tables of two versions.
        for file_name, temp_path in temporary.items():
            os.replace(temp_path, self.directory / file_name)

    def _remove_files_not_in(self, kept: set[str]) -> None:
        """Delete stored tables and extra files that a full replace left out."""
        candidates = [t.file_name for t in TABLES] + list(ORACLE_FILES)
        for file_name in candidates:
            if file_name not in kept:
                (self.directory / file_name).unlink(missing_ok=True)

    def _write_meta(self, meta: Mapping[str, Any] | None, merge: bool) -> None:
        """Write ``meta`` and the row counts to ``_meta.json`` atomically.

        Args:
            meta: new metadata keys.
            merge: keep the stored keys that ``meta`` does not replace.
        """
        stored = merge and (self.directory / META_FILE).exists()
        merged = self.meta() if stored else {}
        merged.update(meta or {})
        merged["rows"] = {
            name: pq.ParquetFile(self.path(name)).metadata.num_rows
            for name in self.stored_tables()
        }
        temp_path = self.directory / f"{_TEMP_PREFIX}{uuid.uuid4().hex[:8]}-{META_FILE}"
        temp_path.write_text(json.dumps(merged, indent=2, default=str), "utf-8")
        os.replace(temp_path, self.directory / META_FILE)

    def read_table(self, name: str, columns: list[str] | None = None) -> pd.DataFrame:
        """Read a stored table with card numbers as strings and times in UTC.

        Raises:
            NotFoundError: when the table has no file yet.
        """
        path = self.path(name)
        if not path.exists():
            raise NotFoundError(
                f"table {name!r} is not stored in {self.directory}; run "
                "'precision warehouse generate' or an import first"
            )
        frame = pd.read_parquet(path, columns=columns)
        return normalize_table(TABLES_BY_NAME[name], frame)

    def read_file(self, file_name: str) -> pd.DataFrame:
        """Read an extra file stored beside the tables (e.g. an oracle file).

        Raises:
            NotFoundError: when the file does not exist.
        """
        path = self.directory / file_name
        if not path.exists():
            raise NotFoundError(
                f"{file_name} is not in {self.directory}; only the synthetic "
                "generator writes it ('precision warehouse generate')"
            )
        return pd.read_parquet(path)

    def read_tables(self) -> dict[str, pd.DataFrame]:
        """Every stored table by name."""
        return {name: self.read_table(name) for name in self.stored_tables()}

    def validate(self) -> dict[str, int]:
        """Check every stored table and the references between them.

        Returns:
            Row counts by table.

        Raises:
            WarehouseValidationError: on the first broken rule.
        """
        tables = {name: _read_compact(self.path(name)) for name in self.stored_tables()}
        validate_tables(tables)
        return {name: len(frame) for name, frame in tables.items()}

    def connect(self) -> duckdb.DuckDBPyConnection:
        """An in-memory DuckDB connection with one view per stored table.

        Extra files (``oracle_needs``, ``oracle_offers``) get views too when present.
        DuckDB spills large joins to a folder beside the warehouse, never into the
        working directory.
        """
        spill = self.directory.parent / ".duckdb-spill"
        connection = duckdb.connect(config={"temp_directory": str(spill)})
        names = {name: self.path(name) for name in self.stored_tables()}
        for file_name in ORACLE_FILES:
            if (self.directory / file_name).exists():
                names[file_name.removesuffix(".parquet")] = self.directory / file_name
        for name, path in names.items():
            quoted = str(path.resolve()).replace("'", "''")
            connection.execute(
                f"CREATE VIEW {name} AS SELECT * FROM read_parquet('{quoted}')"
            )
        return connection

    def meta(self) -> dict[str, Any]:
        """The contents of ``_meta.json``.

        Raises:
            NotReadyError: when the warehouse has no metadata yet.
        """
        path = self.directory / META_FILE
        if not path.exists():
            raise NotReadyError(
                f"no {META_FILE} in {self.directory}; run 'precision warehouse "
                "generate' or an import first"
            )
        return json.loads(path.read_text("utf-8"))

    def as_of(self) -> pd.Timestamp:
        """The UTC time the warehouse's data ends."""
        value = self.meta().get("as_of")
        if value is None:
            raise NotReadyError(
                f"{META_FILE} in {self.directory} has no 'as_of'; regenerate or "
                "re-import the warehouse"
            )
        return utc_timestamp(value)

    def fingerprint(self) -> str:
        """A stable hash of the stored table files: same data, same fingerprint."""
        digest = hashlib.sha256()
        for name in self.stored_tables():
            digest.update(name.encode("utf-8"))
            with self.path(name).open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
        return digest.hexdigest()[:16]


def _read_compact(path: Path) -> pd.DataFrame:
    """A parquet file with text kept in Arrow memory rather than Python strings."""
    text_types = {pa.string(): pd.StringDtype("pyarrow")}
    text_types[pa.large_string()] = pd.StringDtype("pyarrow")
    return pq.read_table(path).to_pandas(types_mapper=text_types.get)
