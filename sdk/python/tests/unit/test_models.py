"""The dataclasses against openapi.json: the same fields, the same required ones."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from edgejobs import models as m

OPENAPI = Path(__file__).resolve().parents[4] / "functions" / "edge" / "openapi.json"
SPEC = json.loads(OPENAPI.read_text())
SCHEMAS = SPEC["components"]["schemas"]


def response_schema(path: str, method: str, status: str = "200") -> dict:
    return SPEC["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]


def resolve(schema: dict) -> dict:
    while "$ref" in schema:
        schema = SCHEMAS[schema["$ref"].rsplit("/", 1)[1]]
    return schema


CASES = {
    m.Job: SCHEMAS["Job"],
    m.JobSummary: SCHEMAS["JobSummary"],
    m.JobPage: SCHEMAS["JobList"],
    m.Backoff: SCHEMAS["Backoff"],
    m.AttemptRecord: SCHEMAS["AttemptRecord"],
    m.Step: SCHEMAS["Step"],
    m.Flow: SCHEMAS["Flow"],
    m.FlowLimit: SCHEMAS["FlowLimit"],
    m.FlowRate: SCHEMAS["FlowRate"],
    m.FlowDebounce: SCHEMAS["FlowDebounce"],
    m.FlowThrottle: SCHEMAS["FlowThrottle"],
    m.JobParent: SCHEMAS["JobParent"],
    m.JobCallback: SCHEMAS["JobCallback"],
    m.StreamEntry: SCHEMAS["Job"]["properties"]["stream_entry"],
    m.JobTrace: SCHEMAS["JobTrace"],
    m.ErrorBody: SCHEMAS["ErrorBody"],
    m.BatchResult: SCHEMAS["BatchResult"],
    m.ReplayResult: SCHEMAS["ReplayResult"],
    m.Schedule: SCHEMAS["Schedule"],
    m.ScheduleRun: SCHEMAS["ScheduleRun"],
    m.SchedulePage: response_schema("/v1/schedules", "get"),
    m.ScheduleDeleted: response_schema("/v1/schedules/{name}", "delete"),
    m.ScheduleTriggered: response_schema("/v1/schedules/{name}/trigger", "post", "201"),
    m.FlowKey: SCHEMAS["FlowKey"],
    m.BusyKey: SCHEMAS["BusyKey"],
    m.FlowChanged: SCHEMAS["FlowChanged"],
    m.EventSent: SCHEMAS["EventSent"],
    m.ReadToken: SCHEMAS["ReadToken"],
    m.WhoAmI: response_schema("/v1/whoami", "get"),
    m.WebhookSecret: response_schema("/v1/admin/webhook-secret", "post"),
    m.Stats: SCHEMAS["Stats"],
    m.StatsCount: SCHEMAS["Stats"]["properties"]["jobs"]["items"],
    m.StatsMinute: SCHEMAS["Stats"]["properties"]["minutes"]["items"],
    m.ConsumersInfo: SCHEMAS["Stats"]["properties"]["consumers"],
    m.ConsumerInfo: SCHEMAS["Stats"]["properties"]["consumers"]["properties"]["list"]["items"],
    m.ShardsAnswered: SCHEMAS["Stats"]["properties"]["shards"],
    m.Health: SCHEMAS["Health"],
    m.BackupSummary: SCHEMAS["BackupSummary"],
    m.Manifest: SCHEMAS["Manifest"],
    # One class for both object kinds of a manifest: `shard` is required of the shards only.
    m.ManifestObject: SCHEMAS["Manifest"]["properties"]["schedules"],
    m.BackupVerdict: response_schema("/v1/admin/backups/{id}/verify", "post"),
    m.RestoreResult: response_schema("/v1/admin/restore", "post"),
    m.ShardRows: response_schema("/v1/admin/restore", "post")["properties"]["per_shard"]["items"],
    m.ResealResult: response_schema("/v1/admin/reseal", "post"),
}


@pytest.mark.parametrize("cls", list(CASES), ids=lambda c: c.__name__)
def test_fields_match_the_schema(cls: type) -> None:
    schema = resolve(CASES[cls])
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "raw"}
    assert set(fields) == set(schema["properties"]), cls.__name__
    required = {n for n, f in fields.items() if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    assert required == set(schema.get("required", [])), cls.__name__
    assert cls.__dataclass_params__.frozen  # type: ignore[attr-defined]


def test_the_batch_item_has_both_shapes_of_the_schema() -> None:
    created, failed = (resolve(s) for s in SCHEMAS["BatchItemResult"]["oneOf"])
    fields = {f.name for f in dataclasses.fields(m.BatchItem)} - {"raw"}
    assert fields == set(created["properties"]) | set(failed["properties"])


def test_the_job_spec_has_every_field_an_enqueue_takes() -> None:
    spec_fields = {f.name for f in dataclasses.fields(m.JobSpec)} - {"extra"}
    for name in ["NoopJobSpec", "WebhookJobSpec", "SleepJobSpec", "HttpRequestJobSpec", "LlmChatJobSpec", "DeclaredJobSpec"]:
        assert set(SCHEMAS[name]["properties"]) == spec_fields, name


def test_the_schedule_arguments_match_the_schedule_spec() -> None:
    import inspect

    from edgejobs import Client

    args = set(inspect.signature(Client.create_schedule).parameters) - {"self"}
    assert args == set(SCHEMAS["ScheduleSpec"]["properties"])
    patch = set(inspect.signature(Client.update_schedule).parameters) - {"self"}
    assert patch == set(SCHEMAS["SchedulePatch"]["properties"])
