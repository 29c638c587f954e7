"""The exceptions the client raises: one class per stable API error `code`, grouped by status.

Every API error is `{"error": {"code", "message", "field"?}}` and each code has one HTTP
status (openapi.json, `ErrorBody`). The classes mirror that: catch a family
(`NotFoundError`, `ConflictError`, `TooManyRequestsError`) or one code (`JobNotFound`,
`InvalidTransition`, `RateLimited`). A code this client does not know yet is raised as its
status's family, so a newer edge never turns an error into a crash of the client.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Type

__all__ = [
    "ApiError",
    "BadRequestError",
    "ConflictError",
    "EdgejobsError",
    "Forbidden",
    "Internal",
    "InvalidField",
    "InvalidJson",
    "InvalidTransition",
    "JobCancelled",
    "JobFailed",
    "JobNotFound",
    "LeaseHeld",
    "LeaseLost",
    "LeaseMismatch",
    "LiveLimit",
    "MethodNotAllowed",
    "NondeterministicStep",
    "NotFound",
    "NotFoundError",
    "NotLeased",
    "PayloadTooLarge",
    "RateLimited",
    "ScheduleExists",
    "ScheduleNotFound",
    "ServerError",
    "StaleAttempt",
    "StepLimit",
    "TenantPendingLimit",
    "Throttled",
    "TooLargeError",
    "TooManyRequestsError",
    "TransportError",
    "Unauthorized",
    "Unavailable",
    "UnknownType",
    "UnsupportedMediaType",
    "WaitTimeout",
    "WebhookVerificationError",
    "error_for",
    "CODES",
]


class EdgejobsError(Exception):
    """Base of every error this package raises."""


class TransportError(EdgejobsError):
    """The request got no HTTP answer (connection refused or reset, a timeout)."""


class WaitTimeout(EdgejobsError):
    """A wait for a job to become final ran out of time; `job` is the job as last read."""

    def __init__(self, message: str, job: Any = None) -> None:
        super().__init__(message)
        self.job = job


class JobFailed(EdgejobsError):
    """A job whose result was asked for ended dead or cancelled; `job` is the final job."""

    def __init__(self, job: Any) -> None:
        detail = f": {job.last_error}" if getattr(job, "last_error", None) else ""
        super().__init__(f"job {job.id} ended {job.state}{detail}")
        self.job = job


class WebhookVerificationError(EdgejobsError):
    """A delivery whose signature, timestamp or headers do not verify."""


class ApiError(EdgejobsError):
    """The API answered an error: `status`, its stable `code`, a `message` and maybe a `field`.

    `retry_after` is the delay (seconds) the answer's `Retry-After` asked for, if any.
    """

    #: The code this class stands for (None for a family class).
    code_name: Optional[str] = None
    #: The HTTP status of this class's codes (None: several).
    status_name: Optional[int] = None

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: Optional[str] = None,
        retry_after: Optional[float] = None,
        headers: Optional[Mapping[str, str]] = None,
    ) -> None:
        where = f" (field {field})" if field else ""
        super().__init__(f"{status} {code}: {message}{where}")
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.retry_after = retry_after
        self.headers: Dict[str, str] = dict(headers or {})


class BadRequestError(ApiError):
    status_name = 400


class InvalidJson(BadRequestError):
    code_name = "invalid_json"


class InvalidField(BadRequestError):
    code_name = "invalid_field"


class UnknownType(BadRequestError):
    code_name = "unknown_type"


class Unauthorized(ApiError):
    code_name, status_name = "unauthorized", 401


class Forbidden(ApiError):
    code_name, status_name = "forbidden", 403


class NotFoundError(ApiError):
    status_name = 404


class NotFound(NotFoundError):
    code_name = "not_found"


class JobNotFound(NotFoundError):
    code_name = "job_not_found"


class ScheduleNotFound(NotFoundError):
    code_name = "schedule_not_found"


class MethodNotAllowed(ApiError):
    code_name, status_name = "method_not_allowed", 405


class ConflictError(ApiError):
    status_name = 409


class InvalidTransition(ConflictError):
    code_name = "invalid_transition"


class ScheduleExists(ConflictError):
    code_name = "schedule_exists"


class StaleAttempt(ConflictError):
    code_name = "stale_attempt"


class LeaseLost(ConflictError):
    code_name = "lease_lost"


class LeaseHeld(ConflictError):
    code_name = "lease_held"


class LeaseMismatch(ConflictError):
    code_name = "lease_mismatch"


class NotLeased(ConflictError):
    code_name = "not_leased"


class JobCancelled(ConflictError):
    code_name = "job_cancelled"


class NondeterministicStep(ConflictError):
    code_name = "nondeterministic_step"


class TooLargeError(ApiError):
    status_name = 413


class PayloadTooLarge(TooLargeError):
    code_name = "payload_too_large"


class StepLimit(TooLargeError):
    code_name = "step_limit"


class LiveLimit(TooLargeError):
    code_name = "live_limit"


class UnsupportedMediaType(ApiError):
    code_name, status_name = "unsupported_media_type", 415


class TooManyRequestsError(ApiError):
    status_name = 429


class RateLimited(TooManyRequestsError):
    code_name = "rate_limited"


class TenantPendingLimit(TooManyRequestsError):
    code_name = "tenant_pending_limit"


class Throttled(TooManyRequestsError):
    code_name = "throttled"


class ServerError(ApiError):
    """A 5xx answer."""


class Internal(ServerError):
    code_name, status_name = "internal", 500


class Unavailable(ServerError):
    code_name, status_name = "unavailable", 503


def _leaves(cls: Type[ApiError]) -> Dict[str, Type[ApiError]]:
    found: Dict[str, Type[ApiError]] = {}
    for sub in cls.__subclasses__():
        if sub.code_name is not None:
            found[sub.code_name] = sub
        found.update(_leaves(sub))
    return found


#: Every stable code this client knows, with its class.
CODES: Dict[str, Type[ApiError]] = _leaves(ApiError)

_FAMILIES: Dict[int, Type[ApiError]] = {
    400: BadRequestError,
    401: Unauthorized,
    403: Forbidden,
    404: NotFoundError,
    405: MethodNotAllowed,
    409: ConflictError,
    413: TooLargeError,
    415: UnsupportedMediaType,
    429: TooManyRequestsError,
    500: Internal,
    503: Unavailable,
}


def error_for(
    status: int,
    code: str,
    message: str,
    *,
    field: Optional[str] = None,
    retry_after: Optional[float] = None,
    headers: Optional[Mapping[str, str]] = None,
) -> ApiError:
    """The exception for an error answer: by its code, else by its status, else `ApiError`."""
    cls = CODES.get(code) or _FAMILIES.get(status) or (ServerError if status >= 500 else ApiError)
    return cls(status, code, message, field=field, retry_after=retry_after, headers=headers)
