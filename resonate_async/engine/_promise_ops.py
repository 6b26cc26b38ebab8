"""``promise.*`` operations of the engine (protocol.md §3.1-3.6)."""

from __future__ import annotations

from resonate_async.engine._core import (
    Core,
    not_awaitable,
    page_limit,
    refuse,
)
from resonate_async.engine._rules import (
    create_problem,
    is_awaitable,
    valid_address,
)
from resonate_async.protocol import (
    TAG_TARGET,
    PromiseCreate,
    PromiseGet,
    PromisePage,
    PromiseRegisterCallback,
    PromiseRegisterListener,
    PromiseResult,
    PromiseSearch,
    PromiseSettle,
    Response,
    origin_of,
)


class PromiseOps(Core):
    """promise.get, create, settle, register_callback, register_listener, search."""

    # promise.* ------------------------------------------------------------------------------------
    def _promise_get(self, req: PromiseGet, now: int, _: str) -> Response:
        p = self._try_timeout(req.id, now)
        if p is None:
            return Response(404, "Promise not found")
        return Response(200, PromiseResult(p))

    def _promise_create(self, req: PromiseCreate, now: int, _: str) -> Response:
        problem = create_problem(req)
        if problem:
            refuse(400, problem)
        return self._get_or_create(req, now)

    def _get_or_create(self, req: PromiseCreate, now: int) -> Response:
        """``promise.create`` of a payload already validated."""
        p = self._try_timeout(req.id, now)
        if p is None:
            p = self._create(req, now)
        return Response(200, PromiseResult(p))

    def _promise_settle(self, req: PromiseSettle, now: int, _: str) -> Response:
        p = self._try_timeout(req.id, now)
        if p is None:
            return Response(404, "Promise not found")
        if p.state == "pending":
            p = self._settle(p, req.state, req.value, now, now)
        return Response(200, PromiseResult(p))

    def _register_callback(self, req: PromiseRegisterCallback, now: int, _: str) -> Response:
        if req.awaited == req.awaiter:
            refuse(400, "A promise cannot await itself")
        if origin_of(req.awaited) != origin_of(req.awaiter):
            refuse(400, "Awaited and awaiter must belong to the same origin")
        awaited = self._try_timeout(req.awaited, now)
        awaiter = self._try_timeout(req.awaiter, now)
        if awaited is None:
            return Response(404, "Awaited promise not found")
        if awaiter is None:
            return Response(422, "Awaiter promise not found")
        if TAG_TARGET not in awaiter.tags:
            return Response(422, "Awaiter promise has no resonate:target tag")
        if not is_awaitable(awaited.tags):
            return Response(422, not_awaitable(awaited.id))
        if awaiter.state == "pending":
            if awaited.state == "pending":
                self.storage.add_callback(awaited.id, awaiter.id)
            else:
                task = self.storage.get_task(awaiter.id)
                if task is not None and task.state != "halted":
                    self._wake(awaiter.id, now)
        return Response(200, PromiseResult(awaited))

    def _register_listener(self, req: PromiseRegisterListener, now: int, _: str) -> Response:
        if not valid_address(req.address):
            refuse(400, "Invalid listener address")
        p = self._try_timeout(req.awaited, now)
        if p is None:
            return Response(404, "Awaited promise not found")
        if not is_awaitable(p.tags):
            return Response(422, not_awaitable(p.id))
        if p.state == "pending":
            self.storage.add_listener(p.id, req.address)
        return Response(200, PromiseResult(p))

    def _promise_search(self, req: PromiseSearch, now: int, _: str) -> Response:
        limit = page_limit(req.limit, 100)
        found = self.storage.search_promises(req.state, req.tags, req.cursor, limit + 1)
        more = len(found) > limit
        found = found[:limit]
        return Response(200, PromisePage(found, found[-1].id if more else None))

