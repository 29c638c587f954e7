"""Schemathesis hooks for scripts/schemathesis (loaded through SCHEMATHESIS_HOOKS).

A check of our own for the batch, and a work-around for a thread-safety bug (below).

`POST /v1/jobs/batch` answers 200 whenever its envelope is valid and reports each item on
its own, so an item that breaks `JobSpec` is not refused by the request's status but by its
own result. Schemathesis's `negative_data_rejection` looks only at the status (and is turned
off for this operation in schemathesis.toml); this check holds each item to it instead: an
item the description forbids must be answered with a status of 400 or more.
"""

import ast
import json
import os
import threading

import jsonschema_rs
import schemathesis

# Hypothesis parses source with `ast.parse` to describe a filter's lambda or to print a
# value; two of Schemathesis's worker threads doing so at once trip a CPython 3.11 bug (the
# AST constructor's recursion depth is not per thread: "SystemError: AST constructor
# recursion depth mismatch"), reported as a runtime error of whichever operation was being
# generated. One parse at a time avoids it; Hypothesis caches what it parses, so this costs
# nothing after the first few.
_parse_lock = threading.RLock()
_parse = ast.parse


def _parse_one_at_a_time(*args, **kwargs):
    with _parse_lock:
        return _parse(*args, **kwargs)


ast.parse = _parse_one_at_a_time

_SPEC = os.path.join(os.path.dirname(__file__), "..", "..", "functions", "edge", "openapi.json")
_validators = {}


def _schema_validator(name):
    """A validator of the OpenAPI document's schema `name` (JobSpec, CallbackInput)."""
    if name not in _validators:
        with open(_SPEC) as f:
            doc = json.load(f)
        _validators[name] = jsonschema_rs.validator_for(
            {
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "components": doc["components"],
                "$ref": f"#/components/schemas/{name}",
            }
        )
    return _validators[name]


def _job_spec_validator():
    return _schema_validator("JobSpec")


@schemathesis.check
def batch_items_rejected_on_their_own(ctx, response, case):
    """A malformed envelope is refused; every item that breaks `JobSpec` is answered with an error result."""
    if case.operation.method.upper() != "POST" or case.operation.path != "/v1/jobs/batch":
        return None
    body = case.body
    # The envelope: `jobs` (1 to 100 items) and, since #30, an optional batch `on_complete`
    # (null is its absence).
    envelope_ok = (
        isinstance(body, dict)
        and "jobs" in body
        and set(body) <= {"jobs", "on_complete"}
        and isinstance(body["jobs"], list)
        and 1 <= len(body["jobs"]) <= 100
        and _schema_validator("CallbackInput").is_valid(body.get("on_complete"))
    )
    if not envelope_ok:
        if response.status_code < 400:
            raise AssertionError(f"a malformed envelope was answered {response.status_code}: {json.dumps(body)[:300]}")
        return None
    if response.status_code != 200:
        return None
    items = body["jobs"]
    results = response.json().get("results", [])
    if not isinstance(items, list) or len(items) != len(results):
        raise AssertionError(f"{len(results)} results for a batch of {len(items)} items")
    validator = _job_spec_validator()
    for i, (item, result) in enumerate(zip(items, results)):
        if not validator.is_valid(item) and result.get("status", 0) < 400:
            problem = next(iter(validator.iter_errors(item)), None)
            raise AssertionError(
                f"batch item {i} breaks JobSpec ({problem.message if problem else '?'}) "
                f"but was answered {result.get('status')}: {json.dumps(item)[:300]}"
            )
    return None
