"""edgejobs: the Python client of the edgejobs job API (sync `Client`, asyncio `AsyncClient`).

Layout:
- `client` / `async_client`: one method per API operation, retries, live streams.
- `models`: the API's objects as frozen dataclasses (openapi.json's schemas).
- `errors`: one exception class per stable error `code`, grouped by HTTP status.
- `webhooks`: `verify_webhook`, Standard Webhooks verification of the edge's deliveries.
- `sse`: the incremental Server-Sent Events parser the streams use.
"""

from . import errors, models
from ._base import VERSION as __version__
from ._retry import RetryPolicy, parse_retry_after
from .async_client import AsyncClient, AsyncEventStream
from .client import Client, EventStream
from .errors import *  # noqa: F401,F403 - the exception classes are part of the top-level API.
from .errors import __all__ as _errors_all
from .models import Chunk, Job, JobSpec, StateChange
from .webhooks import verify_webhook

__all__ = [
    "AsyncClient",
    "AsyncEventStream",
    "Chunk",
    "Client",
    "EventStream",
    "Job",
    "JobSpec",
    "RetryPolicy",
    "StateChange",
    "__version__",
    "errors",
    "models",
    "parse_retry_after",
    "verify_webhook",
    *_errors_all,
]
