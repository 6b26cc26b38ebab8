"""Wire encoding and decoding: camelCase round trips, and errors that name the operation."""

from __future__ import annotations

import json

import msgspec
import pytest

from resonate_async._errors import ProtocolError
from resonate_async.protocol import (
    PROTOCOL_VERSION,
    RESPONSE_TYPES,
    ActionResult,
    Claim,
    Empty,
    Execute,
    FenceResult,
    Preload,
    Promise,
    PromiseCreate,
    PromiseResult,
    Response,
    ResponseHead,
    Schedule,
    ScheduleCreate,
    Task,
    TaskAcquire,
    TaskFence,
    Unblock,
    Value,
    decode_data,
    decode_message,
    decode_response,
    encode,
    encode_request,
    encode_response,
    execute_message,
    new_corr_id,
    parse_envelope,
    unblock_message,
)
from resonate_async.protocol import EnvelopeError as EnvelopeErrorType

PROMISE = Promise("wf:1", "resolved", Value({"h": "v"}, "eA=="), Value(data="NDI="),
                  {"resonate:origin": "wf"}, 10, 5, 7)
PENDING = Promise("wf", "pending", Value(), Value(), {}, 10, 5)


def answer(kind: str, status: int, data: object, corr_id: str = "c1") -> bytes:
    return json.dumps({"kind": kind, "head": {"corrId": corr_id, "status": status,
                                              "version": PROTOCOL_VERSION},
                       "data": data}).encode()


# records ----------------------------------------------------------------------------------------
def test_a_promise_encodes_in_camel_case_and_omits_settled_at_while_pending() -> None:
    assert json.loads(encode(PENDING)) == {"id": "wf", "state": "pending", "param": {},
                                           "value": {}, "tags": {}, "timeoutAt": 10,
                                           "createdAt": 5}
    assert json.loads(encode(PROMISE))["settledAt"] == 7


def test_a_promise_round_trips_through_json() -> None:
    assert msgspec.json.decode(encode(PROMISE), type=Promise) == PROMISE


def test_a_task_omits_ttl_and_pid_unless_acquired() -> None:
    assert json.loads(encode(Task("t", "pending", 0, 0))) == {
        "id": "t", "state": "pending", "version": 0, "resumes": 0}
    held = Task("t", "acquired", 1, 0, 60_000, "p1")
    assert msgspec.json.decode(encode(held), type=Task) == held


def test_a_schedule_round_trips_in_camel_case() -> None:
    s = Schedule("s", "* * * * *", "{{.id}}-{{.timestamp}}", 1000, Value(data="e30="),
                 {"resonate:target": "poll://any@g"}, 1, 2, 3)
    wire = json.loads(encode(s))
    assert set(wire) == {"id", "cron", "promiseId", "promiseTimeout", "promiseParam",
                         "promiseTags", "createdAt", "nextRunAt", "lastRunAt"}
    assert msgspec.json.decode(encode(s), type=Schedule) == s


# requests ---------------------------------------------------------------------------------------
def test_encode_request_builds_the_envelope_with_camel_case_data() -> None:
    body = encode_request(PromiseCreate("p", 10, tags={"a": "b"}), corr_id="c7", auth="jwt")
    assert json.loads(body) == {"kind": "promise.create",
                                "head": {"corrId": "c7", "version": PROTOCOL_VERSION,
                                         "auth": "jwt"},
                                "data": {"id": "p", "timeoutAt": 10, "tags": {"a": "b"}}}


@pytest.mark.parametrize("request_", [
    PromiseCreate("p", 10, Value(data="eA=="), {"a": "b"}),
    TaskAcquire("t", 0, "p1", 1000),
    ScheduleCreate("s", "* * * * *", "x", 5, Value(), {"resonate:target": "poll://any@g"}),
])
def test_requests_round_trip_through_the_envelope(request_: object) -> None:
    body = encode_request(request_, corr_id="c1")  # type: ignore[arg-type]
    env = parse_envelope(body)
    assert not isinstance(env, EnvelopeErrorType)
    assert env.corr_id == "c1"
    assert decode_data(env.kind, env.data) == request_


def test_a_fence_action_decodes_to_its_inner_kind() -> None:
    data = json.dumps({"id": "wf", "version": 1, "action": {
        "kind": "promise.settle", "data": {"id": "wf:1", "state": "rejected"}}}).encode()
    fence = decode_data("task.fence", data)
    assert isinstance(fence, TaskFence)
    assert fence.action.data.id == "wf:1"


def test_decode_data_rejects_integers_beyond_64_bits() -> None:
    with pytest.raises(msgspec.ValidationError):
        decode_data("promise.create", b'{"id":"p","timeoutAt":9223372036854775808}')


@pytest.mark.parametrize("data", [b'{"id":"\xff"}', b'{"id":"\xc3"}', b'{"id":"\xed\xa0\x80"}'])
def test_decode_data_reports_invalid_utf8_as_a_validation_error_saying_what_to_fix(
    data: bytes,
) -> None:
    # Whichever msgspec version: older ones raise UnicodeDecodeError, newer a DecodeError.
    with pytest.raises(msgspec.ValidationError, match="must be encoded as UTF-8"):
        decode_data("promise.get", data)


@pytest.mark.parametrize("data", [b'{"id":', b'{"id":"x"', b'{"id":"x"}}'])
def test_decode_data_reports_malformed_json_as_a_validation_error(data: bytes) -> None:
    with pytest.raises(msgspec.ValidationError):
        decode_data("promise.get", data)


def test_new_corr_ids_are_unique() -> None:
    assert len({new_corr_id() for _ in range(100)}) == 100


# parse_envelope ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("body", "kind", "corr_id", "start"), [
    (b"\xff", "unknown", "0", "Invalid request envelope"),
    (b'{"kind":"k","head":{"corrId":"c","version":"2026-04-01"},"data":{"id":"\xff"}}',
     "unknown", "0", "Invalid request envelope: invalid UTF-8 (byte 0xff"),
    (b'{"kind":"k","head":{"corrId":"c"}}', "k", "c", "Invalid request envelope"),
    (b'{"kind":"","head":{"corrId":"c","version":"2026-04-01"},"data":{}}', "unknown", "c",
     "Missing or invalid 'kind'"),
    (b'{"kind":"k","head":{"corrId":"c","version":"2026-04-01"},"data":[]}', "k", "c",
     "Invalid 'data' field"),
    (b'{"kind":"k","head":{"corrId":"c","version":"1"},"data":{}}', "k", "c",
     "Unsupported protocol version '1'"),
])
def test_parse_envelope_reports_the_first_failing_check(body: bytes, kind: str, corr_id: str,
                                                        start: str) -> None:
    err = parse_envelope(body)
    assert isinstance(err, EnvelopeErrorType)
    assert (err.kind, err.corr_id, err.status) == (kind, corr_id, 400)
    assert err.message.startswith(start)


def test_encode_response_sets_the_head_status() -> None:
    body = encode_response("promise.get", "c1", Response(404, "Promise not found"))
    assert json.loads(body) == {"kind": "promise.get",
                                "head": {"corrId": "c1", "status": 404,
                                         "version": PROTOCOL_VERSION},
                                "data": "Promise not found"}


# decode_response --------------------------------------------------------------------------------
def test_decode_response_decodes_a_success_payload() -> None:
    reply = decode_response("promise.get", "c1",
                            answer("promise.get", 200, {"promise": json.loads(encode(PROMISE))}))
    assert reply == Response(200, PromiseResult(PROMISE))


def test_decode_response_accepts_201_for_creations() -> None:
    reply = decode_response("promise.create", "c1",
                            answer("promise.create", 201, {"promise": json.loads(encode(PENDING))}))
    assert reply.status == 201
    assert reply.data == PromiseResult(PENDING)


def test_decode_response_decodes_the_300_preload_of_task_suspend() -> None:
    reply = decode_response("task.suspend", "c1", answer("task.suspend", 300, {
        "preload": [json.loads(encode(PROMISE))]}))
    assert reply == Response(300, Preload([PROMISE]))


def test_decode_response_decodes_every_success_kind_from_an_engine_answer() -> None:
    samples = {
        "task.suspend": Empty(),
        "task.acquire": Claim(Task("t", "acquired", 1, 0, 10, "p"), PENDING, [PROMISE]),
        "task.fence": FenceResult(
            ActionResult("promise.settle", ResponseHead("c1", 404), "Promise not found"), []),
        "promise.create": PromiseResult(PENDING),
    }
    for kind, data in samples.items():
        assert kind in RESPONSE_TYPES
        reply = decode_response(kind, "c1", encode_response(kind, "c1", Response(200, data)))
        assert reply == Response(200, data)


@pytest.mark.parametrize("data", ["Promise not found", {"error": "Promise not found"}])
def test_decode_response_keeps_error_messages_as_a_string(data: object) -> None:
    reply = decode_response("promise.get", "c1", answer("promise.get", 404, data))
    assert reply == Response(404, "Promise not found")


@pytest.mark.parametrize(("kind", "body"), [
    ("promise.get", b"not json"),
    ("promise.get", b"\xff"),
    ("promise.get", answer("promise.get", 200, {"promise": {"id": "x"}})),
    ("promise.get", answer("promise.get", 200, [])),
    ("promise.get", answer("promise.get", 404, 7)),
    ("promise.get", answer("promise.get", 300, {})),
    ("promise.get", answer("promise.get", 302, {})),
    ("task.acquire", answer("task.acquire", 200, {"task": {}})),
    ("task.suspend", answer("task.suspend", 300, {"preload": "x"})),
    ("promise.get", answer("promise.get", 200, {"promise": {}}, corr_id="other")),
    ("promise.get", answer("promise.create", 200, {"promise": json.loads(encode(PENDING))})),
    ("promise.get", b'{"kind":"promise.get","head":{},"data":{}}'),
    ("no.such.kind", answer("no.such.kind", 200, {})),
])
def test_decode_response_turns_malformed_answers_into_a_protocol_error_naming_the_kind(
    kind: str, body: bytes,
) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_response(kind, "c1", body)
    assert info.value.kind == kind
    assert kind in str(info.value)


def test_decode_response_without_corr_id_skips_the_echo_check() -> None:
    body = answer("task.release", 200, {}, corr_id="whatever")
    assert decode_response("task.release", None, body) == Response(200, Empty())


# push messages ----------------------------------------------------------------------------------
def test_execute_messages_round_trip() -> None:
    message = execute_message("wf", 3, "http://localhost:8001")
    wire = json.loads(encode(message))
    assert wire == {"kind": "execute", "head": {"serverUrl": "http://localhost:8001"},
                    "data": {"task": {"id": "wf", "version": 3}}}
    decoded = decode_message(encode(message))
    assert isinstance(decoded, Execute)
    assert (decoded.task_id, decoded.version) == ("wf", 3)


def test_unblock_messages_round_trip() -> None:
    message = unblock_message(PROMISE)
    assert json.loads(encode(message))["head"] == {}
    decoded = decode_message(encode(message))
    assert isinstance(decoded, Unblock)
    assert decoded.promise == PROMISE


@pytest.mark.parametrize("body", [b"", b"\xff", b"[]", b'{"kind":"execute"}',
                                  b'{"kind":"other","head":{},"data":{}}',
                                  b'{"kind":"unblock","head":{},"data":{"promise":{}}}'])
def test_decode_message_turns_garbage_into_a_protocol_error(body: bytes) -> None:
    with pytest.raises(ProtocolError, match="malformed push message"):
        decode_message(body)
