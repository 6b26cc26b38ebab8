"""The dev server's web view over HTTP: the page, its JSON endpoints, filters, actions,
escaping and the token. In-process (``httpx.ASGITransport``) for the endpoints' contract;
against a real ``python -m resonate_async dev`` with a worker for what workflows show."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import anyio
import httpx
import pytest

from resonate_async import ApplicationError, CanceledError, Context, Resonate
from resonate_async.engine import Engine
from resonate_async.server import DevApp
from resonate_async.testing import VirtualClock
from tests._devserver import DevServerProcess, dev_server

VERSION = "2026-04-01"
FAR = 4_102_444_800_000
TOKEN = "ui-test-token-0123456789"
WAIT = 30  # seconds a real server and worker get to reach a state (a bound, not a timing)


def _b64(value: Any) -> str:
    return base64.b64encode(json.dumps(value).encode()).decode()


def _envelope(kind: str, data: Any, auth: str | None = None) -> bytes:
    head: dict[str, Any] = {"corrId": "c1", "version": VERSION}
    if auth is not None:
        head["auth"] = auth
    return json.dumps({"kind": kind, "head": head, "data": data}).encode()


def _suffix() -> str:
    return os.urandom(5).hex()


# -- in process: the contract of the page and the endpoints -----------------------------------

@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(auto_advance=False)


@pytest.fixture
async def app(clock: VirtualClock) -> AsyncIterator[DevApp]:
    async with DevApp(Engine.memory(), clock=clock) as running:
        yield running


@pytest.fixture
async def client(app: DevApp) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://dev") as c:
        yield c


async def _create(client: httpx.AsyncClient, pid: str, tags: dict[str, str],
                  param: Any = None, auth: str | None = None) -> None:
    data: dict[str, Any] = {"id": pid, "timeoutAt": FAR, "tags": tags}
    if param is not None:
        data["param"] = {"data": _b64(param)}
    answer = await client.post("/", content=_envelope("promise.create", data, auth))
    assert answer.status_code == 200, answer.text


def _root_tags(pid: str) -> dict[str, str]:
    return {"resonate:origin": pid, "resonate:target": "poll://any@default",
            "resonate:scope": "global"}


async def test_the_page_is_served_at_root_under_a_strict_content_security_policy(
        client: httpx.AsyncClient) -> None:
    page = await client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "'unsafe-inline'" not in csp
    assert "frame-ancestors 'none'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert '<script src="/ui/app.js"' in page.text
    assert '<link rel="stylesheet" href="/ui/app.css">' in page.text
    script = await client.get("/ui/app.js")
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert "/ui/api/executions" in script.text
    assert (await client.get("/ui/app.css")).headers["content-type"].startswith("text/css")


async def test_the_script_inserts_data_only_as_text(client: httpx.AsyncClient) -> None:
    script = (await client.get("/ui/app.js")).text
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                 "new Function"):
        assert sink not in script, f"the page's script uses {sink}: data could become markup"
    assert "createTextNode" in script and "textContent" in script


async def test_the_token_never_goes_into_a_url(client: httpx.AsyncClient) -> None:
    script = (await client.get("/ui/app.js")).text
    assert '"Authorization"' in script and "sessionStorage" in script
    assert "token=" not in script


@pytest.mark.parametrize(("method", "path", "status"), [
    ("PUT", "/", 405), ("POST", "/ui/api/executions", 405), ("GET", "/ui/api/settle", 405),
    ("GET", "/ui/api/nowhere", 404), ("GET", "/ui/other", 404), ("POST", "/ui/app.js", 405),
])
async def test_wrong_methods_and_paths_get_json_errors_that_say_what_to_use(
        client: httpx.AsyncClient, method: str, path: str, status: int) -> None:
    answer = await client.request(method, path)
    assert answer.status_code == status
    if path.startswith("/ui/"):
        assert answer.json()["error"]


async def test_the_list_shows_root_executions_newest_first_with_their_function(
        client: httpx.AsyncClient, clock: VirtualClock) -> None:
    await _create(client, "old", _root_tags("old"), {"func": "checkout", "args": []})
    await _create(client, "old:1", {"resonate:origin": "old", "resonate:parent": "old"})
    await clock.advance(1)
    await _create(client, "new", _root_tags("new"), {"func": "refund", "args": []})
    await _create(client, "loose", {})  # a promise of nobody's: not an execution
    answer = await client.get("/ui/api/executions")
    assert answer.status_code == 200
    body = answer.json()
    assert [row["id"] for row in body["executions"]] == ["new", "old"]
    assert [row["function"] for row in body["executions"]] == ["refund", "checkout"]
    assert body["functions"] == ["checkout", "refund"]
    assert body["more"] is False
    assert all(row["created_at"] <= body["now"] for row in body["executions"])


async def test_the_list_filters_by_function_and_state_and_is_limited(
        client: httpx.AsyncClient) -> None:
    for name in ("a1", "a2", "b1"):
        await _create(client, name, _root_tags(name), {"func": name[0], "args": []})
    settle = {"id": "a2", "state": "resolved", "value": {"data": _b64(2)}}
    assert (await client.post("/", content=_envelope("promise.settle", settle))).is_success
    by_function = (await client.get("/ui/api/executions", params={"function": "a"})).json()
    assert sorted(row["id"] for row in by_function["executions"]) == ["a1", "a2"]
    assert by_function["functions"] == ["a", "b"]
    by_state = (await client.get("/ui/api/executions",
                                 params={"function": "a", "state": "pending"})).json()
    assert [row["id"] for row in by_state["executions"]] == ["a1"]
    limited = (await client.get("/ui/api/executions", params={"limit": "1"})).json()
    assert len(limited["executions"]) == 1 and limited["more"] is True


@pytest.mark.parametrize(("query", "needle"), [
    ({"state": "done"}, "unknown state 'done'"), ({"limit": "0"}, "from 1 to"),
    ({"limit": "many"}, "from 1 to"),
])
async def test_bad_list_filters_are_refused_with_the_choices(
        client: httpx.AsyncClient, query: dict[str, str], needle: str) -> None:
    answer = await client.get("/ui/api/executions", params=query)
    assert answer.status_code == 400
    assert needle in answer.json()["error"]


async def test_the_tree_endpoint_needs_an_id_and_names_a_missing_one(
        client: httpx.AsyncClient) -> None:
    missing = await client.get("/ui/api/execution")
    assert missing.status_code == 400 and "?id=" in missing.json()["error"]
    unknown = await client.get("/ui/api/execution", params={"id": "ghost"})
    assert unknown.status_code == 404 and "'ghost'" in unknown.json()["error"]


async def test_user_data_comes_back_as_json_text_never_as_markup(
        client: httpx.AsyncClient) -> None:
    evil = "<img src=x onerror=alert(1)>"
    await _create(client, evil, _root_tags(evil), {"func": "</script><b>f", "args": []})
    settle = {"id": evil, "state": "resolved",
              "value": {"data": _b64("<script>alert('v')</script>")}}
    assert (await client.post("/", content=_envelope("promise.settle", settle))).is_success
    listed = await client.get("/ui/api/executions")
    assert listed.headers["content-type"] == "application/json"
    assert listed.headers["x-content-type-options"] == "nosniff"
    row = listed.json()["executions"][0]
    assert (row["id"], row["function"]) == (evil, "</script><b>f")
    tree = (await client.get("/ui/api/execution", params={"id": evil})).json()
    assert json.loads(tree["root"]["value"]) == "<script>alert('v')</script>"
    assert evil not in (await client.get("/")).text  # the page itself carries no data


async def test_settle_refuses_what_it_cannot_do_and_changes_nothing(
        client: httpx.AsyncClient) -> None:
    await _create(client, "p", {})

    async def post(body: Any, content_type: str = "application/json") -> httpx.Response:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        return await client.post("/ui/api/settle", content=raw,
                                 headers={"content-type": content_type})

    form = await post({"id": "p", "action": "resolve"}, "application/x-www-form-urlencoded")
    assert form.status_code == 415 and "application/json" in form.json()["error"]
    assert (await post(b"{nope")).status_code == 400
    assert (await post([1])).status_code == 400
    bad = await post({"id": "p", "action": "approve"})
    assert bad.status_code == 400 and '"resolve", "reject" or "cancel"' in bad.json()["error"]
    ghost = await post({"id": "ghost", "action": "resolve"})
    assert ghost.status_code == 404 and "'ghost'" in ghost.json()["error"]
    got = await client.post("/", content=_envelope("promise.get", {"id": "p"}))
    assert got.json()["data"]["promise"]["state"] == "pending"
    done = await post({"id": "p", "action": "resolve", "value": {"ok": True}})
    assert done.status_code == 200
    assert done.json()["promise"]["state"] == "resolved"
    assert json.loads(done.json()["promise"]["value"]) == {"ok": True}
    again = await post({"id": "p", "action": "reject"})
    assert again.status_code == 409 and "already resolved" in again.json()["error"]


async def test_with_a_token_the_endpoints_need_it_as_a_bearer_header() -> None:
    async with DevApp(Engine.memory(), token=TOKEN) as app, \
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                              base_url="http://dev") as client:
        await _create(client, "secret", _root_tags("secret"), {"func": "f", "args": []},
                      auth=TOKEN)
        assert (await client.get("/")).status_code == 200  # the page holds no data
        assert (await client.get("/ui/app.js")).status_code == 200
        good = {"authorization": f"Bearer {TOKEN}"}
        for headers, params in (({}, {}), ({"authorization": "Bearer wrong"}, {}),
                                ({}, {"token": TOKEN}), ({"authorization": TOKEN}, {})):
            refused = await client.get("/ui/api/executions", headers=headers, params=params)
            assert refused.status_code == 401
            assert "Authorization: Bearer" in refused.json()["error"]
        settle = {"id": "secret", "action": "cancel"}
        refused = await client.post("/ui/api/settle", json=settle)
        assert refused.status_code == 401
        listed = await client.get("/ui/api/executions", headers=good)
        assert [row["state"] for row in listed.json()["executions"]] == ["pending"]
        done = await client.post("/ui/api/settle", json=settle, headers=good)
        assert done.json()["promise"]["state"] == "rejected_canceled"


# -- against a real dev server, with a worker -------------------------------------------------

@pytest.fixture(scope="module")
def server() -> Iterator[DevServerProcess]:
    with dev_server() as running:
        yield running


@pytest.fixture
async def view(server: DevServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as c:
        yield c


@pytest.fixture
async def app_resonate(server: DevServerProcess) -> AsyncIterator[Resonate]:
    resonate = Resonate(url=server.url, group=f"ui-{_suffix()}")

    def double(ctx: Context, n: int) -> int:
        return n * 2

    @resonate.register(name="approve")
    async def approve(ctx: Context, n: int) -> str:
        doubled = await ctx.run(double, n)
        await ctx.sleep(timedelta(milliseconds=1))
        decision = await ctx.promise(timeout=timedelta(hours=1)).spawn()
        answer = await decision
        return f"{doubled}:{answer}"

    @resonate.register(name="explode")
    async def explode(ctx: Context) -> None:
        raise ApplicationError("boom <b>")

    async with resonate:
        yield resonate


async def _tree(view: httpx.AsyncClient, root: str) -> dict[str, Any]:
    answer = await view.get("/ui/api/execution", params={"id": root})
    assert answer.status_code == 200, answer.text
    tree: dict[str, Any] = answer.json()["root"]
    return tree


async def _awaited_promise(view: httpx.AsyncClient, root: str) -> dict[str, Any]:
    """The pending ``promise`` step of ``root``'s tree, once the workflow made it."""
    with anyio.fail_after(WAIT):
        while True:
            tree = await _tree(view, root)
            for child in tree["children"]:
                if child["kind"] == "promise" and child["state"] == "pending":
                    return child
            await anyio.sleep(0.05)


async def test_the_tree_shows_each_step_in_call_order_and_resolving_completes_the_workflow(
        app_resonate: Resonate, view: httpx.AsyncClient) -> None:
    root = f"order-{_suffix()}"
    handle = await app_resonate.run(root, "approve", 21)
    awaited = await _awaited_promise(view, root)
    tree = await _tree(view, root)
    assert (tree["kind"], tree["function"], tree["state"]) == ("root", "approve", "pending")
    kinds = [(c["kind"], c["state"]) for c in tree["children"]]
    assert kinds == [("run", "resolved"), ("sleep", "resolved"), ("promise", "pending")]
    assert json.loads(tree["children"][0]["value"]) == 42
    assert tree["children"][0]["settled_at"] >= tree["children"][0]["created_at"]
    listed = (await view.get("/ui/api/executions",
                             params={"function": "approve", "state": "pending"})).json()
    assert root in [row["id"] for row in listed["executions"]]
    assert awaited["id"] not in [row["id"] for row in listed["executions"]]
    settled = await view.post("/ui/api/settle",
                              json={"id": awaited["id"], "action": "resolve", "value": "yes"})
    assert settled.status_code == 200, settled.text
    with anyio.fail_after(WAIT):
        assert await handle == "42:yes"
    done = await _tree(view, root)
    assert done["state"] == "resolved" and json.loads(done["value"]) == "42:yes"


async def test_rejecting_the_awaited_promise_from_the_view_fails_the_workflow(
        app_resonate: Resonate, view: httpx.AsyncClient) -> None:
    root = f"order-{_suffix()}"
    handle = await app_resonate.run(root, "approve", 1)
    awaited = await _awaited_promise(view, root)
    answer = await view.post("/ui/api/settle", json={"id": awaited["id"], "action": "reject",
                                                     "message": "denied by ops"})
    assert answer.status_code == 200
    with anyio.fail_after(WAIT), pytest.raises(ApplicationError, match="denied by ops"):
        await handle
    tree = await _tree(view, root)
    assert tree["state"] == "rejected" and "denied by ops" in tree["error"]


async def test_cancelling_an_execution_from_the_view_cancels_its_root(
        app_resonate: Resonate, view: httpx.AsyncClient) -> None:
    root = f"order-{_suffix()}"
    handle = await app_resonate.run(root, "approve", 1)
    await _awaited_promise(view, root)
    answer = await view.post("/ui/api/settle", json={"id": root, "action": "cancel"})
    assert answer.json()["promise"]["state"] == "rejected_canceled"
    with anyio.fail_after(WAIT), pytest.raises(CanceledError):
        await handle
    listed = (await view.get("/ui/api/executions",
                             params={"state": "rejected_canceled"})).json()
    assert root in [row["id"] for row in listed["executions"]]


async def test_a_failed_workflow_shows_its_error(
        app_resonate: Resonate, view: httpx.AsyncClient) -> None:
    root = f"boom-{_suffix()}"
    handle = await app_resonate.run(root, "explode")
    with anyio.fail_after(WAIT), pytest.raises(ApplicationError):
        await handle
    tree = await _tree(view, root)
    assert (tree["state"], tree["value"]) == ("rejected", None)
    assert "boom <b>" in tree["error"]
    listed = (await view.get("/ui/api/executions",
                             params={"function": "explode", "state": "rejected"})).json()
    assert root in [row["id"] for row in listed["executions"]]
