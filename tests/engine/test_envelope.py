"""Envelope-level checks (protocol.md §1.3-1.4): whatever the bytes, ``handle`` answers."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resonate_async.engine import Engine
from resonate_async.protocol import REQUEST_TYPES
from tests.engine.conftest import VERSION, Client, envelope

HEAD = {"corrId": "c9", "version": VERSION}


def test_a_valid_request_echoes_kind_and_corr_id(client: Client) -> None:
    reply = client.request("promise.get", {"id": "x"}, corr_id="abc-123")
    assert (reply.kind, reply.corr_id) == ("promise.get", "abc-123")


@pytest.mark.parametrize("body", [b"", b"not json", b"[]", b"{", b"\xff\xfe", b"null",
                                  b'"\xed\xa0\x80"'])
def test_malformed_json_is_400_with_unknown_kind_and_corr_id_0(client: Client,
                                                               body: bytes) -> None:
    reply = client.raw(body)
    assert (reply.status, reply.kind, reply.corr_id) == (400, "unknown", "0")
    assert reply.data.startswith("Invalid request envelope")


@pytest.mark.parametrize("body", [
    b'{"kind":"promise.get","head":{"corrId":"x\xff","version":"2026-04-01"},"data":{}}',
    b'{"kind":"promise.get","head":{"corrId":"x","version":"2026-04-01"},"data":{"id":"\xff"}}',
    b'{"kind":"promise.get","head":{"corrId":"x","version":"2026-04-01"},"data":{"id":"\xc3"}}',
    b'{"kind":"promise.create","head":{"corrId":"x","version":"2026-04-01"},'
    b'"data":{"id":"p","timeoutAt":1,"tags":{"k":"\xed\xa0\x80"}}}',
])
def test_invalid_utf8_anywhere_in_the_body_is_a_400_envelope_error(client: Client,
                                                                    body: bytes) -> None:
    # As the server (serde over the whole body): nothing can be echoed from a body that is
    # not UTF-8, and the message says what to fix.
    reply = client.raw(body)
    assert (reply.status, reply.kind, reply.corr_id) == (400, "unknown", "0")
    assert reply.data.startswith("Invalid request envelope: ")
    assert "UTF-8" in reply.data


def test_valid_utf8_inside_data_is_decoded(client: Client) -> None:
    body = ('{"kind":"promise.create","head":{"corrId":"x","version":"2026-04-01"},'
            f'"data":{{"id":"caf\u00e9 ✓","timeoutAt":{client.now + 10}}}}}').encode()
    reply = client.raw(body)
    assert reply.status == 200
    assert reply.data["promise"]["id"] == "café ✓"


@pytest.mark.parametrize("body", [
    {"kind": "promise.get", "data": {}},
    {"kind": "promise.get", "head": {"version": VERSION}, "data": {}},
    {"kind": "promise.get", "head": {"corrId": 7, "version": VERSION}, "data": {}},
    {"kind": "promise.get", "head": {"corrId": "c9"}, "data": {}},
    {"kind": "promise.get", "head": HEAD},
    {"kind": 3, "head": HEAD, "data": {}},
    {"head": HEAD, "data": {}},
    {"kind": "promise.get", "head": [], "data": {}},
])
def test_an_envelope_missing_or_mistyping_a_field_is_400(client: Client,
                                                         body: dict[str, Any]) -> None:
    reply = client.raw(json.dumps(body).encode())
    assert reply.status == 400
    assert reply.data.startswith("Invalid request envelope")


def test_a_broken_envelope_echoes_what_it_can_read(client: Client) -> None:
    reply = client.raw(json.dumps({"kind": "promise.get", "head": {"corrId": "c9"}}).encode())
    assert (reply.kind, reply.corr_id) == ("promise.get", "c9")


def test_an_empty_kind_is_400(client: Client) -> None:
    reply = client.raw(json.dumps({"kind": "", "head": HEAD, "data": {}}).encode())
    assert reply.status == 400
    assert reply.corr_id == "c9"
    assert "kind" in reply.data


@pytest.mark.parametrize("data", [[], "x", 1, None, True])
def test_data_that_is_not_an_object_is_400(client: Client, data: Any) -> None:
    reply = client.raw(json.dumps({"kind": "promise.get", "head": HEAD, "data": data}).encode())
    assert (reply.status, reply.data) == (400, "Invalid 'data' field — must be an object")
    assert (reply.kind, reply.corr_id) == ("promise.get", "c9")


@pytest.mark.parametrize("version", ["2025-01-01", "", "1"])
def test_a_wrong_protocol_version_is_400(client: Client, version: str) -> None:
    body = {"kind": "promise.get", "head": {"corrId": "c9", "version": version},
            "data": {"id": "x"}}
    reply = client.raw(json.dumps(body).encode())
    assert reply.status == 400
    assert reply.data.startswith(f"Unsupported protocol version '{version}'")


def test_an_unknown_kind_is_400_and_echoed(client: Client) -> None:
    reply = client.request("promise.explode", {})
    assert (reply.status, reply.kind, reply.data) == (400, "promise.explode",
                                                      "Unknown operation: promise.explode")


@pytest.mark.parametrize("kind", ["debug.start", "debug.reset", "debug.tick", "debug.snap"])
def test_debug_kinds_are_403(client: Client, kind: str) -> None:
    reply = client.request(kind, {})
    assert (reply.status, reply.data) == (403, "Debug operations are disabled")


def test_unknown_fields_are_ignored(client: Client) -> None:
    body = {"kind": "promise.create", "extra": 1,
            "head": {**HEAD, "auth": "token", "resonate:debug_time": 5, "other": True},
            "data": {"id": "p", "timeoutAt": client.now + 10, "unknown": [1, 2]}}
    reply = client.raw(json.dumps(body).encode())
    assert reply.status == 200
    assert reply.data["promise"]["createdAt"] == client.now  # debug_time is not honoured


@pytest.mark.parametrize(("kind", "data"), [
    ("promise.get", {}),
    ("promise.get", {"id": 1}),
    ("promise.create", {"id": "p", "timeoutAt": "soon"}),
    ("promise.settle", {"id": "p", "state": "resolved", "value": "v"}),
    ("promise.register_listener", {"awaited": "p"}),
    ("task.acquire", {"id": "t", "version": None, "pid": "p", "ttl": 1}),
    ("task.suspend", {"id": "t", "version": 1, "actions": {}}),
    ("task.heartbeat", {"pid": "p", "tasks": [{"id": "t"}]}),
    ("schedule.create", {"id": "s", "cron": 5, "promiseId": "x", "promiseTimeout": 1}),
])
def test_wrong_field_types_are_400_invalid_request(client: Client, kind: str,
                                                   data: dict[str, Any]) -> None:
    reply = client.request(kind, data)
    assert reply.status == 400
    assert reply.data.startswith("Invalid request")
    assert reply.kind == kind


def test_snake_case_field_names_are_not_accepted(client: Client) -> None:
    assert client.request("promise.create", {"id": "p", "timeout_at": client.now}).status == 400


# handle never raises ------------------------------------------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=3),
    max_leaves=10,
)
kinds = st.sampled_from([*REQUEST_TYPES, "debug.tick", "", "nope"])
ids_ = st.sampled_from(["a", "a:1", "b", "", "a\x00"])
known_fields = st.fixed_dictionaries({}, optional={
    "id": ids_, "awaited": ids_, "awaiter": ids_, "timeoutAt": json_values,
    "version": json_values, "pid": st.text(max_size=3), "ttl": json_values,
    "state": st.sampled_from(["resolved", "pending", "bogus"]), "tags": json_values,
    "address": st.sampled_from(["poll://any@g", "x"]), "limit": json_values,
    "cron": st.sampled_from(["* * * * *", "bad"]), "promiseId": st.text(max_size=4),
    "promiseTimeout": json_values, "promiseTags": json_values, "tasks": json_values,
    "action": json_values, "actions": json_values, "param": json_values, "cursor": json_values,
})
envelopes = st.fixed_dictionaries(
    {"kind": kinds | json_values, "head": st.fixed_dictionaries(
        {}, optional={"corrId": st.text(max_size=4) | json_values,
                      "version": st.just(VERSION) | json_values}),
     "data": known_fields | json_values},
)


def check_answer(engine: Engine, body: bytes, now: int) -> None:
    out = engine.handle(body, now)
    env = json.loads(out)
    assert isinstance(env["kind"], str)
    assert isinstance(env["head"]["corrId"], str)
    assert env["head"]["status"] in (200, 300, 400, 403, 404, 409, 422)


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> list[Engine]:
    path = tmp_path_factory.mktemp("fuzz") / "fuzz.db"
    return [Engine.memory(), Engine.sqlite(str(path))]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.binary(max_size=200))
def test_handle_answers_arbitrary_bytes_without_raising(engines: list[Engine],
                                                        body: bytes) -> None:
    for engine in engines:
        check_answer(engine, body, 1_000)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=envelopes, now=st.integers(min_value=0, max_value=2**40))
def test_handle_answers_arbitrary_json_envelopes_without_raising(
    engines: list[Engine], body: dict[str, Any], now: int,
) -> None:
    for engine in engines:
        check_answer(engine, json.dumps(body).encode(), now)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=json_values)
def test_handle_answers_arbitrary_json_values_without_raising(engines: list[Engine],
                                                              body: Any) -> None:
    for engine in engines:
        check_answer(engine, json.dumps(body).encode(), 1_000)


def test_data_of_a_valid_kind_wrapped_with_a_valid_head_reaches_every_handler(
    client: Client,
) -> None:
    for kind in REQUEST_TYPES:
        reply = client.raw(envelope(kind, {}))
        assert reply.kind == kind
        assert reply.status in (200, 400), (kind, reply)
