"""Typed settings shared by every job; reading them has no side effects."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from features.errors import ConfigurationError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SECRET_FILE_NAME = ".pseudonym-secret"
MIN_SECRET_BYTES = 16


class Settings(BaseSettings):
    """Where the product keeps its data and which secret keys card holders.

    Every field can be set from the environment with the ``PRECISION_`` prefix, for
    example ``PRECISION_DATA_DIR=/srv/precision``.
    """

    model_config = SettingsConfigDict(env_prefix="PRECISION_", extra="forbid")

    data_dir: Path = Field(
        default=PROJECT_ROOT / "data",
        description="Folder for the warehouse, feature tables, stores and models.",
    )
    pseudonym_secret: str | None = Field(
        default=None,
        description=(
            "Secret for the keyed hash of card numbers; when unset, the file "
            "<data_dir>/.pseudonym-secret is read."
        ),
    )
    online_store: str = Field(
        default="sqlite",
        description="Feast online store: 'sqlite' (default) or 'redis'.",
    )
    redis_url: str = Field(default="127.0.0.1:6379", description="Redis host:port.")
    registry_url: str | None = Field(
        default=None,
        description="SQL URL of the Feast registry; a file in data_dir when unset.",
    )

    @property
    def warehouse_dir(self) -> Path:
        """Parquet tables of the card-keyed warehouse."""
        return self.data_dir / "warehouse"

    @property
    def feature_dir(self) -> Path:
        """Pseudonymised feature tables computed from the warehouse."""
        return self.data_dir / "features"

    @property
    def feast_dir(self) -> Path:
        """Feast registry and the SQLite online store."""
        return self.data_dir / "feast"

    @property
    def scores_dir(self) -> Path:
        """Batch-scored propensities read by segment previews."""
        return self.data_dir / "scores"

    @property
    def mlflow_uri(self) -> str:
        """Default MLflow tracking store: SQLite inside the data folder."""
        return f"sqlite:///{(self.data_dir / 'mlflow.db').resolve()}"

    @cached_property
    def secret_bytes(self) -> bytes:
        """The pseudonym secret, from the environment or the local secret file.

        Raises:
            ConfigurationError: when no secret is configured or it is too short.
        """
        secret = self.pseudonym_secret
        secret_file = self.data_dir / SECRET_FILE_NAME
        if secret is None and secret_file.exists():
            secret = secret_file.read_text(encoding="utf-8").strip()
        if secret is None:
            raise ConfigurationError(
                "no pseudonym secret: set PRECISION_PSEUDONYM_SECRET or run "
                f"'precision warehouse init-secret' to create {secret_file}"
            )
        if len(secret.encode("utf-8")) < MIN_SECRET_BYTES:
            raise ConfigurationError(
                f"pseudonym secret is {len(secret)} characters; use at least "
                f"{MIN_SECRET_BYTES} random characters"
            )
        return secret.encode("utf-8")
