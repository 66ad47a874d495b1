"""The small exception hierarchy of the appliance; the API maps it to HTTP in one place."""

from __future__ import annotations


class ApplianceError(Exception):
    """Base of every error the appliance raises on purpose. `status` is the HTTP mapping."""

    status: int = 500
    title: str = "Internal error"

    def __init__(self, detail: str, **extra: object) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class InvalidInput(ApplianceError):
    status = 400
    title = "Invalid input"


class Unauthorized(ApplianceError):
    status = 401
    title = "Unauthorized"


class Forbidden(ApplianceError):
    status = 403
    title = "Forbidden"


class NotFound(ApplianceError):
    status = 404
    title = "Not found"


class Conflict(ApplianceError):
    status = 409
    title = "Conflict"


class PayloadTooLarge(ApplianceError):
    status = 413
    title = "Payload too large"


class UnsupportedFormat(ApplianceError):
    """A file whose content we cannot parse (binary, corrupt, unknown format)."""

    status = 415
    title = "Unsupported or unreadable format"


class NotReady(ApplianceError):
    status = 503
    title = "Not ready"


class TooManyRequests(ApplianceError):
    """Back-pressure: the caller should retry after `retry_after` seconds (the HTTP Retry-After header)."""

    status = 429
    title = "Too many requests"

    def __init__(self, detail: str, retry_after: float = 1, **extra: object) -> None:
        # Retry-After takes whole seconds; round up so a client never retries before the estimate.
        self.retry_after = max(1, int(-(-retry_after // 1)))
        super().__init__(detail, retry_after=self.retry_after, **extra)
