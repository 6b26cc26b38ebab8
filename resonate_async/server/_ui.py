"""The development server's web view: executions, their call trees, and actions on them.

``GET /`` serves a page (``_ui_page``: plain HTML, CSS and a vanilla script, no build step)
that reads three JSON endpoints of the dev server:

* ``GET /ui/api/executions?state=&function=&limit=``: the root executions, newest first;
* ``GET /ui/api/execution?id=``: one execution's call tree, in call order (``_tree``);
* ``POST /ui/api/settle`` ``{"id", "action": "resolve"|"reject"|"cancel", "value",
  "message"}``: settle a pending promise (``cancel`` an execution by its root promise).

Values are decoded with the SDK's codec and shown as JSON text. With a token, the endpoints
need ``Authorization: Bearer <token>`` (the page keeps the token in the tab's session storage
and never in a URL); the page and its script hold no data and stay open. The page renders
everything with ``textContent`` (never as HTML) under a Content-Security-Policy that allows
only the server's own script, and ``POST`` accepts only ``application/json`` (which a page of
another site cannot send without a CORS preflight, which this server never grants).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final
from urllib.parse import parse_qs

import msgspec
import structlog

from resonate_async._clock import Clock
from resonate_async._codec import Codec
from resonate_async._errors import ApplicationError
from resonate_async._records import PromiseRecord
from resonate_async._tree import (
    Node,
    _find,
    build_tree,
    describe,
    function_of,
    is_execution,
    outcome,
)
from resonate_async.engine import Engine
from resonate_async.protocol import (
    TAG_ORIGIN,
    PromiseGet,
    PromiseSearch,
    PromiseSettle,
    Value,
    id_problem,
    origin_of,
)
from resonate_async.server._ui_page import APP_CSS, APP_JS, PAGE_HTML

log = structlog.get_logger("resonate_async.server")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ReadBody = Callable[[Scope, Receive], Awaitable[bytes | None]]

STATES: Final = ("pending", "resolved", "rejected", "rejected_canceled", "rejected_timedout")
ACTIONS: Final = {"resolve": "resolved", "reject": "rejected", "cancel": "rejected_canceled"}
DEFAULT_LIMIT: Final = 100
MAX_LIMIT: Final = 1000
VALUE_CHARS: Final = 4000  # a value's JSON text beyond this is cut (the page shows a summary)
PAGE_SIZE: Final = 100
_CSP: Final = (b"default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
               b"img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
_COMMON: Final = [(b"x-content-type-options", b"nosniff"), (b"cache-control", b"no-store"),
                  (b"referrer-policy", b"no-referrer")]
_HTML: Final = [(b"content-type", b"text/html; charset=utf-8"),
                (b"content-security-policy", _CSP), (b"x-frame-options", b"DENY"), *_COMMON]
_JS: Final = [(b"content-type", b"text/javascript; charset=utf-8"), *_COMMON]
_CSS: Final = [(b"content-type", b"text/css; charset=utf-8"), *_COMMON]
_JSON: Final = [(b"content-type", b"application/json"), *_COMMON]


class UIError(Exception):
    """A request to the web view's API that cannot be answered: its status and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class WebView:
    """The web view of one engine: the page and its JSON endpoints.

    ``authorized(scope)`` tells whether a request may read or act (the dev server's token
    check); ``read_body`` reads a request body within the server's size limit (``None`` if
    too large); ``after_write`` runs after each settle (delivers the engine's messages).
    """

    def __init__(self, engine: Engine, clock: Clock, *, authorized: Callable[[Scope], bool],
                 read_body: ReadBody, after_write: Callable[[], None],
                 codec: Codec | None = None) -> None:
        self.engine = engine
        self.clock = clock
        self.codec = codec if codec is not None else Codec()
        self._authorized = authorized
        self._read_body = read_body
        self._after_write = after_write

    # ASGI -------------------------------------------------------------------------------------
    async def page(self, send: Send) -> None:
        """Answer ``GET /`` with the page."""
        await _respond(send, 200, PAGE_HTML.encode(), _HTML)

    async def handle(self, scope: Scope, receive: Receive, send: Send, rest: list[str]) -> None:
        """Answer a request below ``/ui/`` (``rest``: the path segments after ``ui``)."""
        method: str = scope["method"]
        if rest in (["app.js"], ["app.css"]):
            if method not in ("GET", "HEAD"):
                await _error(send, 405, f"{method} /ui/{rest[0]}: only GET is allowed")
                return
            if rest == ["app.js"]:
                await _respond(send, 200, APP_JS.encode(), _JS)
            else:
                await _respond(send, 200, APP_CSS.encode(), _CSS)
            return
        if len(rest) != 2 or rest[0] != "api" or rest[1] not in _ENDPOINTS:
            await _error(send, 404, f"no such web view path: /ui/{'/'.join(rest)} (the "
                         "endpoints are /ui/api/executions, /ui/api/execution, /ui/api/settle)")
            return
        name = rest[1]
        wanted = "POST" if name == "settle" else "GET"
        if method != wanted:
            await _error(send, 405, f"{method} /ui/api/{name}: use {wanted}")
            return
        if not self._authorized(scope):
            log.warning("web_view_unauthorized", endpoint=name)
            await _error(send, 401, "this server needs its token: send it as "
                                    "'Authorization: Bearer <token>' (the page: enter it in "
                                    "the token field)")
            return
        try:
            if name == "settle":
                answer = await self._settle_request(scope, receive)
            else:
                query = _query(scope)
                if name == "executions":
                    answer = self.executions(state=query.get("state") or None,
                                             function=query.get("function") or None,
                                             limit=_limit(query.get("limit")))
                else:
                    answer = self.execution(_required(query, "id"))
        except UIError as exc:
            await _error(send, exc.status, exc.message)
            return
        await _respond(send, 200, msgspec.json.encode(answer), _JSON)

    async def _settle_request(self, scope: Scope, receive: Receive) -> dict[str, Any]:
        if not _content_type(scope).startswith(b"application/json"):
            raise UIError(415, "POST /ui/api/settle takes a JSON body: send it with "
                               "'Content-Type: application/json'")
        body = await self._read_body(scope, receive)
        if body is None:
            raise UIError(413, "the request body is too large for this server")
        try:
            request = json.loads(body)
        except ValueError as exc:
            raise UIError(400, f"the body is not JSON ({exc}); send "
                               '{"id": ..., "action": "resolve", "value": ...}') from None
        if not isinstance(request, dict):
            raise UIError(400, "the body must be a JSON object: "
                               '{"id": ..., "action": "resolve"|"reject"|"cancel"}')
        promise_id = request.get("id")
        action = request.get("action")
        if not isinstance(promise_id, str):
            raise UIError(400, '"id" must be the id of a promise, as a string')
        if action not in ACTIONS:
            raise UIError(400, f'"action" must be "resolve", "reject" or "cancel", '
                               f"got {action!r}")
        message = request.get("message")
        if message is not None and not isinstance(message, str):
            raise UIError(400, '"message" (the error of a rejection) must be a string')
        return self.settle(promise_id, action, value=request.get("value"),
                           message=message)

    # the endpoints as methods -----------------------------------------------------------------
    def executions(self, *, state: str | None = None, function: str | None = None,
                   limit: int = DEFAULT_LIMIT) -> dict[str, Any]:
        """The root executions (``state``, ``function``: only those), newest first.

        Returns ``{"now", "executions": [...], "more", "functions"}``: at most ``limit`` rows,
        whether more matched, and the function names of every root execution seen (for the
        page's filter).
        """
        if state is not None and state not in STATES:
            raise UIError(400, f"unknown state {state!r}: use one of {', '.join(STATES)}")
        found: list[PromiseRecord] = []
        functions: set[str] = set()
        # A root's id holds no ':' and a child's always does (the engine refuses an origin
        # with ':'): skip the children before decoding them.
        for record in self._search(state, None, roots_only=True):
            if not is_execution(record) or not _is_root(record):
                continue
            name = function_of(record) or ""
            if name:
                functions.add(name)
            if function is None or name == function:
                found.append(record)
        found.sort(key=lambda r: (r.created_at, r.id), reverse=True)
        return {"now": self.clock.now_ms(),
                "executions": [_fields(r) for r in found[:limit]],
                "more": len(found) > limit, "functions": sorted(functions)}

    def execution(self, root_id: str) -> dict[str, Any]:
        """The call tree of execution ``root_id``: ``{"now", "root": node}``, each node with
        its kind, function, state, value or error, times and children in call order."""
        problem = id_problem(root_id, root=False)
        if problem is not None:
            raise UIError(400, f"bad id: {problem}")
        origin = origin_of(root_id)
        records = list(self._search(None, {TAG_ORIGIN: origin}))
        if not any(r.id == origin for r in records):
            root = self._get(origin)
            if root is None:
                raise UIError(404, f"no execution with id {root_id!r} (see the list of "
                                   "executions for the ids there are)")
            records.append(root)
        node = _find(build_tree(records), root_id)
        if node is None:
            raise UIError(404, f"no promise {root_id!r} in the execution {origin!r}")
        return {"now": self.clock.now_ms(), "root": _node(node)}

    def settle(self, promise_id: str, action: str, *, value: Any = None,
               message: str | None = None) -> dict[str, Any]:
        """Settle pending promise ``promise_id``: ``resolve`` with ``value`` (JSON),
        ``reject`` with ``message``, or ``cancel``. Returns ``{"promise": row}``.

        ``UIError`` 404 if there is no such promise, 409 if it is settled already (a promise
        is settled once: nothing changes).
        """
        problem = id_problem(promise_id, root=False)
        if problem is not None:
            raise UIError(400, f"bad id: {problem}")
        state = ACTIONS.get(action)
        if state is None:
            raise UIError(400, f"unknown action {action!r}: use resolve, reject or cancel")
        before = self._get(promise_id)
        if before is None:
            raise UIError(404, f"no promise with id {promise_id!r}")
        if not before.pending:
            raise UIError(409, f"promise {promise_id!r} is already {before.state}; a promise is "
                               "settled only once (nothing changed)")
        if action == "resolve":
            try:
                encoded = self.codec.encode(value, what=f"value of promise {promise_id!r}")
            except Exception as exc:
                raise UIError(400, str(exc)) from None
        elif action == "reject":
            encoded = self.codec.encode_error(
                ApplicationError(message or "rejected from the web view"))
        else:
            encoded = Value()
        response = self.engine.execute(PromiseSettle(promise_id, state, encoded),  # type: ignore[arg-type]
                                       self.clock.now_ms(), remote=True)
        self._after_write()
        if not response.ok:
            raise UIError(response.status, f"the engine refused to settle {promise_id!r}: "
                                           f"{response.data}")
        after = PromiseRecord.of(response.data.promise, self.codec)
        if after.state != state:
            raise UIError(409, f"promise {promise_id!r} was settled meanwhile: it is "
                               f"{after.state} (nothing changed)")
        log.info("promise_settled_from_web_view", promise_id=promise_id, state=state)
        return {"promise": _fields(after)}

    # reading the engine -----------------------------------------------------------------------
    def _search(self, state: str | None, tags: dict[str, str] | None, *,
                roots_only: bool = False) -> list[PromiseRecord]:
        out: list[PromiseRecord] = []
        cursor: str | None = None
        while True:
            response = self.engine.execute(
                PromiseSearch(state, tags, PAGE_SIZE, cursor),  # type: ignore[arg-type]
                self.clock.now_ms(), remote=True)
            if not response.ok:
                raise UIError(500, f"the engine could not search promises: {response.data}")
            out.extend(PromiseRecord.of(p, self.codec) for p in response.data.promises
                       if not roots_only or ":" not in p.id)
            cursor = response.data.cursor
            if cursor is None:
                return out

    def _get(self, promise_id: str) -> PromiseRecord | None:
        response = self.engine.execute(PromiseGet(promise_id), self.clock.now_ms(), remote=True)
        if response.status == 404:
            return None
        if not response.ok:
            raise UIError(500, f"the engine could not read {promise_id!r}: {response.data}")
        return PromiseRecord.of(response.data.promise, self.codec)


_ENDPOINTS: Final = ("executions", "execution", "settle")


def _is_root(record: PromiseRecord) -> bool:
    return record.id == (record.tags.get(TAG_ORIGIN) or origin_of(record.id))


def _ms(at: Any) -> int | None:
    return None if at is None else round(at.timestamp() * 1000)


def _fields(record: PromiseRecord) -> dict[str, Any]:
    """What the page shows of one promise (values as JSON text, cut at ``VALUE_CHARS``)."""
    kind, _, name = describe(record).partition(" ")
    value, error = outcome(record)
    row: dict[str, Any] = {
        "id": record.id, "kind": kind, "function": name or function_of(record) or "",
        "state": record.state, "created_at": _ms(record.created_at),
        "settled_at": _ms(record.settled_at), "timeout_at": _ms(record.timeout_at),
        "value": None, "error": None,
    }
    if error is not None:
        row["error"] = _cut(error)
    elif record.state == "resolved":
        row["value"] = _cut(json.dumps(value, ensure_ascii=False, default=str))
    return row


def _node(node: Node) -> dict[str, Any]:
    out = _fields(node.record)
    out["children"] = [_node(child) for child in node.children]
    return out


def _cut(text: str) -> str:
    return text if len(text) <= VALUE_CHARS else text[: VALUE_CHARS - 1] + "…"


def _query(scope: Scope) -> dict[str, str]:
    raw: bytes = scope.get("query_string", b"")
    parsed = parse_qs(raw.decode("latin-1"), keep_blank_values=True)
    return {key: values[-1] for key, values in parsed.items()}


def _required(query: dict[str, str], name: str) -> str:
    value = query.get(name)
    if not value:
        raise UIError(400, f"give the execution's id: /ui/api/execution?{name}=<root id>")
    return value


def _limit(text: str | None) -> int:
    if text is None or text == "":
        return DEFAULT_LIMIT
    try:
        limit = int(text)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_LIMIT:
        raise UIError(400, f"limit={text!r}: give a number of executions from 1 to {MAX_LIMIT}")
    return limit


def _content_type(scope: Scope) -> bytes:
    for name, value in scope["headers"]:
        if name == b"content-type":
            return bytes(value).strip().lower()
    return b""


async def _error(send: Send, status: int, message: str) -> None:
    await _respond(send, status, msgspec.json.encode({"error": message}), _JSON)


async def _respond(send: Send, status: int, body: bytes,
                   headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body, "more_body": False})
