"""Fixtures of the stack scenarios: clients for the keys the harness gives, and a receiver.

The harness (tests/e2e/sdk.rs) runs these against a local stack with EDGEJOBS_URL,
EDGEJOBS_API_KEY, EDGEJOBS_ADMIN_KEY, EDGEJOBS_LIMITED_KEY, EDGEJOBS_OTHER_KEY,
EDGEJOBS_RECEIVER_PORT, EDGEJOBS_WORKFLOW_TYPE and EDGEJOBS_LLM=1. A scenario whose
variables are missing fails and says which: a skipped scenario would look like a passed one
in a summary.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, TypeVar

import pytest

import edgejobs

T = TypeVar("T")


def pytest_configure(config: pytest.Config) -> None:
    # The harness runs pytest with -q and prints the log only on failure; one line per test
    # there (as -v) shows which scenarios ran, not just how many.
    config.option.verbose = max(config.option.verbose, 1)


#: Longest any scenario waits for a condition.
WAIT = 60.0


def need(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run the stack scenarios through tests/e2e (sdk_python_client_runs_the_scenarios) or set it", pytrace=False)
    return value


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def until(what: str, probe: Callable[[], Optional[T]], limit: float = WAIT, pause: float = 0.2) -> T:
    """Calls `probe` until it returns something other than None, for at most `limit` s."""
    deadline = time.monotonic() + limit
    while True:
        got = probe()
        if got is not None:
            return got
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {limit} s")
        time.sleep(pause)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def url() -> str:
    return need("EDGEJOBS_URL")


@pytest.fixture
def client(url: str) -> Iterator[edgejobs.Client]:
    with edgejobs.Client(url, need("EDGEJOBS_API_KEY")) as c:
        yield c


@pytest.fixture
def admin(url: str) -> Iterator[edgejobs.Client]:
    with edgejobs.Client(url, need("EDGEJOBS_ADMIN_KEY")) as c:
        yield c


@pytest.fixture
def other(url: str) -> Iterator[edgejobs.Client]:
    with edgejobs.Client(url, need("EDGEJOBS_OTHER_KEY")) as c:
        yield c


class Delivery:
    def __init__(self, path: str, headers: Dict[str, str], body: bytes) -> None:
        self.path, self.headers, self.body = path, headers, body


#: A route's answer to a delivery: the status and a JSON body.
Route = Callable[[Delivery], Tuple[int, Any]]


class Receiver:
    """An HTTP server on 127.0.0.1 recording what the edge POSTs; answers by path.

    A path with a route (`routes`) is answered by it; any other path by its status in
    `statuses` (default 200) and an empty body.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.deliveries: List[Delivery] = []
        self.statuses: Dict[str, int] = {}
        self.routes: Dict[str, Route] = {}
        #: What a route raised, by path: a test with a route asserts this stays empty.
        self.errors: List[str] = []
        self.lock = threading.Lock()
        self._start()

    def _start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming.
                length = int(self.headers.get("content-length") or 0)
                delivery = Delivery(self.path, {k.lower(): v for k, v in self.headers.items()}, self.rfile.read(length))
                with receiver.lock:
                    receiver.deliveries.append(delivery)
                    route = receiver.routes.get(self.path)
                    status = receiver.statuses.get(self.path, 200)
                body = b""
                if route is not None:
                    try:
                        status, answer = route(delivery)
                    except Exception as e:  # noqa: BLE001 - kept for the test to report.
                        # A 500 makes the edge retry; the test fails on `errors` with the cause.
                        with receiver.lock:
                            receiver.errors.append(f"{self.path}: {e!r}")
                        status, answer = 500, {"error": repr(e)}
                    body = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def received(self, path: str) -> List[Delivery]:
        with self.lock:
            return [d for d in self.deliveries if d.path == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    @contextlib.contextmanager
    def released(self) -> Iterator[None]:
        """Frees the port for the block (the README's example binds it), then binds it again."""
        self.close()
        try:
            yield
        except BaseException:
            # The block's error is the one to see, not a port its failure left bound.
            with contextlib.suppress(OSError):
                self._start()
            raise
        self._start()


# One server for the session: only one can bind EDGEJOBS_RECEIVER_PORT, and the stack sends
# both webhooks and the workflow type's calls (JOB_TYPES: .../workflow) to it.
@pytest.fixture(scope="session")
def receiver() -> Iterator[Receiver]:
    r = Receiver(int(need("EDGEJOBS_RECEIVER_PORT")))
    yield r
    r.close()
