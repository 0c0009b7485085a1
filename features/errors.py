"""One exception family for the whole product.

Every error a user can cause or fix derives from :class:`PrecisionError`. Each class
owns its HTTP status so that the service edge maps the family in one place.
"""

from __future__ import annotations


class PrecisionError(Exception):
    """Base of every error raised on purpose by this product."""

    http_status: int = 500
    code: str = "internal_error"


class ConfigurationError(PrecisionError):
    """A setting, secret or file the product needs is missing or malformed."""

    http_status = 500
    code = "configuration_error"


class InputError(PrecisionError):
    """A request or argument is malformed; the message names the field."""

    http_status = 422
    code = "invalid_input"


class WarehouseValidationError(PrecisionError):
    """A warehouse file breaks a schema rule; nothing was written."""

    http_status = 422
    code = "warehouse_invalid"

    def __init__(
        self, file: str, column: str | None, rule: str, detail: str, rows: str = ""
    ) -> None:
        self.file = file
        self.column = column
        self.rule = rule
        self.detail = detail
        self.rows = rows
        where = f"{file}, column {column!r}" if column else file
        message = f"{where}: rule {rule!r} failed: {detail}"
        if rows:
            message += f"\nfirst offending rows:\n{rows}"
        super().__init__(message)


class NotReadyError(PrecisionError):
    """A model, feature table or score file has not been built yet."""

    http_status = 503
    code = "not_ready"


class NotFoundError(PrecisionError):
    """A named model, run, table or object does not exist."""

    http_status = 404
    code = "not_found"


class AuthenticationError(PrecisionError):
    """No API key, or one that matches no configured key."""

    http_status = 401
    code = "unauthenticated"


class PermissionDeniedError(PrecisionError):
    """The API key is valid but its role may not call this endpoint."""

    http_status = 403
    code = "forbidden"


class LimitExceededError(PrecisionError):
    """A request asks for more than the service allows (cards per batch, k)."""

    http_status = 413
    code = "limit_exceeded"


class PromotionRefusedError(PrecisionError):
    """A candidate model is worse than the champion beyond the tolerance."""

    http_status = 409
    code = "promotion_refused"
