"""JSON on the wire: the one decode path for requests, responses and push messages.

Decoding validates at the boundary (msgspec), so code past it never sees malformed data. Every
failure is reported as a value (``EnvelopeError``) or a ``ProtocolError`` with a message that
says what is wrong; nothing here raises ``KeyError`` or crashes on hostile input.
"""

from __future__ import annotations

import uuid
from typing import Any

import msgspec

from resonate_async._errors import ProtocolError
from resonate_async.protocol._messages import (
    REQUEST_TYPES,
    RESPONSE_TYPES,
    ActionResult,
    FenceResult,
    Message,
    Preload,
    Request,
    RequestEnvelope,
    RequestHead,
    Response,
    ResponseEnvelope,
    ResponseHead,
)
from resonate_async.protocol._records import PROTOCOL_VERSION

_encoder = msgspec.json.Encoder()
encode = _encoder.encode


class _Head(msgspec.Struct, frozen=True):
    corrId: str  # the wire name
    version: str
    auth: str | None = None
    debug_time: int | None = msgspec.field(default=None, name="resonate:debug_time")


class _Envelope(msgspec.Struct, frozen=True):
    kind: str
    head: _Head
    data: msgspec.Raw


class _Salvage(msgspec.Struct):
    """Best-effort recovery of kind and corrId from a broken envelope."""

    kind: Any = None
    head: Any = None


_envelope_decoder = msgspec.json.Decoder(_Envelope)
_salvage_decoder = msgspec.json.Decoder(_Salvage)
_data_decoders = {kind: msgspec.json.Decoder(cls) for kind, cls in REQUEST_TYPES.items()}


class Envelope(msgspec.Struct, frozen=True):
    """A request envelope that passed the envelope-level checks; ``data`` is still raw JSON."""

    kind: str
    corr_id: str
    auth: str | None
    debug_time: int | None
    data: msgspec.Raw


class EnvelopeError(msgspec.Struct, frozen=True):
    """A request that failed before dispatch: answer it with ``status`` and ``message``."""

    kind: str
    corr_id: str
    status: int
    message: str


def parse_envelope(body: bytes) -> Envelope | EnvelopeError:
    """Apply protocol.md §1.4 steps 1-4 to a ``POST /`` body."""
    try:
        env = _envelope_decoder.decode(body)
        # ``data`` is kept raw, so msgspec has not looked inside its strings yet; the server
        # rejects bad UTF-8 anywhere in the body as an envelope error, and so do we.
        str(env.data, "utf-8")
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:  # older msgspec: UnicodeDecodeError
        kind, corr_id = _salvage(body)
        return EnvelopeError(kind, corr_id, 400, f"Invalid request envelope: {_reason(exc)}")
    if not env.kind:
        return EnvelopeError(
            "unknown", env.head.corrId, 400,
            "Missing or invalid 'kind' field — must be a non-empty string",
        )
    if not bytes(env.data).startswith(b"{"):
        return EnvelopeError(
            env.kind, env.head.corrId, 400, "Invalid 'data' field — must be an object"
        )
    if env.head.version != PROTOCOL_VERSION:
        return EnvelopeError(
            env.kind, env.head.corrId, 400,
            f"Unsupported protocol version '{env.head.version}', "
            f'supported versions: ["{PROTOCOL_VERSION}"]',
        )
    return Envelope(env.kind, env.head.corrId, env.head.auth, env.head.debug_time, env.data)


def _salvage(body: bytes) -> tuple[str, str]:
    try:
        body.decode("utf-8")  # as the server: a body that is not UTF-8 has nothing to echo
        raw = _salvage_decoder.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return "unknown", "0"
    kind = raw.kind if isinstance(raw.kind, str) and raw.kind else "unknown"
    corr = raw.head.get("corrId") if isinstance(raw.head, dict) else None
    return kind, corr if isinstance(corr, str) else "0"


def _reason(exc: Exception) -> str:
    """What a decode failure says, worded the same whichever msgspec version raised it."""
    if isinstance(exc, UnicodeDecodeError):  # older msgspec, or the check of raw ``data``
        return (f"invalid UTF-8 (byte 0x{exc.object[exc.start]:02x}: {exc.reason}) — JSON text "
                f"must be encoded as UTF-8")
    if "UTF-8" in str(exc):  # newer msgspec reports bad UTF-8 as a DecodeError
        return f"{exc} — JSON text must be encoded as UTF-8"
    return str(exc)


def decode_data(kind: str, data: bytes) -> Request:
    """Decode the ``data`` of a known kind; raises ``msgspec.ValidationError`` when invalid.

    Every way ``data`` can be unusable (a wrong type, a missing field, malformed JSON, bad
    UTF-8) is a ``ValidationError``, whatever the msgspec version, so the caller answers 400.
    """
    try:
        request: Request = _data_decoders[kind].decode(data)
        return request
    except msgspec.ValidationError:
        raise
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise msgspec.ValidationError(_reason(exc)) from None


def encode_response(kind: str, corr_id: str, response: Response) -> bytes:
    """The response envelope for ``response``; the HTTP status equals ``response.status``."""
    return encode(ResponseEnvelope(kind, ResponseHead(corr_id, response.status), response.data))


def new_corr_id() -> str:
    return f"ra-{uuid.uuid4().hex}"


def encode_request(request: Request, *, corr_id: str, auth: str | None = None) -> bytes:
    """The ``POST /`` body for a request payload."""
    head = RequestHead(corr_id, PROTOCOL_VERSION, auth=auth)
    return encode(RequestEnvelope(request.KIND, head, request))


class _ResponseEnvelopeIn(msgspec.Struct, frozen=True):
    kind: str
    head: ResponseHead
    data: msgspec.Raw


_response_envelope_decoder = msgspec.json.Decoder(_ResponseEnvelopeIn)
_response_decoders = {kind: msgspec.json.Decoder(cls) for kind, cls in RESPONSE_TYPES.items()}


class _FenceResultIn(msgspec.Struct, frozen=True):
    """``task.fence``'s answer as clients read it: the preload is skipped, not decoded.

    The server recomputes the whole branch's preload on every fence; a client that keeps its
    own cache never needs it, and decoding it would make a long execution quadratic.
    """

    action: ActionResult
    preload: msgspec.Raw = msgspec.Raw(b"[]")


_fence_decoder = msgspec.json.Decoder(_FenceResultIn)
_preload_decoder = msgspec.json.Decoder(Preload)
_error_decoder = msgspec.json.Decoder(str | dict[str, Any])
_message_decoder = msgspec.json.Decoder(Message)
# Clients accept 201 for creations too (protocol.md, our decision 7).
_SUCCESS = frozenset((200, 201))


def decode_response(kind: str, corr_id: str | None, body: bytes, *,
                    fence_preload: bool = True) -> Response:
    """Decode the answer to a ``kind`` request; raises ``ProtocolError`` when it is malformed.

    Error answers keep their message as ``data`` (a string, or the ``error`` field of an object).
    ``fence_preload=False`` skips the preload of ``task.fence`` answers (left empty).
    """
    decoder = _response_decoders.get(kind)
    if decoder is None:
        raise ProtocolError(f"cannot decode an answer to the unknown operation {kind!r}",
                            kind=kind)
    try:
        env = _response_envelope_decoder.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"the server's answer is not a response envelope ({exc})",
                            kind=kind) from None
    if corr_id is not None and env.head.corr_id != corr_id:
        raise ProtocolError(
            f"the server answered corrId {env.head.corr_id!r} to request {corr_id!r}", kind=kind
        )
    status = env.head.status
    if status < 400 and env.kind != kind:
        raise ProtocolError(f"the server answered kind {env.kind!r} to a {kind!r} request",
                            kind=kind)
    try:
        if status in _SUCCESS:
            if kind == "task.fence" and not fence_preload:
                fenced = _fence_decoder.decode(env.data)
                return Response(status, FenceResult(fenced.action, []))
            return Response(status, decoder.decode(env.data))
        if status == 300 and kind == "task.suspend":
            return Response(status, _preload_decoder.decode(env.data))
        if status >= 400:
            err = _error_decoder.decode(env.data)
            if isinstance(err, dict):
                err = str(err.get("error", err))
            return Response(status, err)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"malformed {status} answer: {exc}", kind=kind) from None
    raise ProtocolError(f"unexpected status {status} in the server's answer", kind=kind)


def decode_message(body: bytes) -> Message:
    """Decode one push message (``execute`` or ``unblock``); raises ``ProtocolError``."""
    try:
        message: Message = _message_decoder.decode(body)  # typed Any or Message by version
        return message
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"malformed push message ({exc})") from None
