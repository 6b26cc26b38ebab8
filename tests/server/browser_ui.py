"""The web view in a real headless browser (``nox -s ui``): Debian's chromium driven by
playwright, against ``python -m resonate_async dev --token ...`` with a worker running a few
workflows (one running a step, one waiting on a promise, one failed, one done, one whose
value is markup). It checks what the page shows, resolves the waiting workflow's promise
from the page, and writes a screenshot (``docs/ui.png`` unless given another path).

    python -m tests.server.browser_ui [SCREENSHOT] [--chromium /usr/bin/chromium]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from datetime import timedelta
from pathlib import Path

import anyio

from resonate_async import ApplicationError, Context, Resonate
from tests._devserver import dev_server

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "browser-check-token-0123"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
WAIT_MS = 30_000  # how long the page gets to show something (a bound, never a timing check)
MARKUP = "<img src=x onerror=window.__xss=1>"


def _app(url: str, release: anyio.Event) -> Resonate:
    resonate = Resonate(url=url, token=TOKEN, group="browser-check")

    def price(ctx: Context, sku: str) -> dict[str, object]:
        return {"sku": sku, "cents": 1299}

    async def ship(ctx: Context, order: str) -> str:
        await release.wait()  # "running": this step is still executing
        return f"shipped {order}"

    @resonate.register(name="approve_refund")
    async def approve_refund(ctx: Context, order: str) -> str:
        quote = await ctx.run(price, "sku-42")
        await ctx.sleep(timedelta(milliseconds=1))
        decision = await ctx.promise(timeout=timedelta(days=3)).spawn()
        answer = await decision
        return f"{order}: {answer} ({quote['cents']} cents)"

    @resonate.register(name="fulfil")
    async def fulfil(ctx: Context, order: str) -> str:
        return await ctx.run(ship, order)

    @resonate.register(name="charge")
    async def charge(ctx: Context, order: str) -> str:
        raise ApplicationError(f"card declined for {order}")

    @resonate.register(name="echo")
    async def echo(ctx: Context, text: str) -> str:
        return text

    return resonate


async def check(screenshot: Path, chromium: str) -> None:
    from playwright.async_api import async_playwright, expect

    expect.set_options(timeout=WAIT_MS)
    with dev_server(args=["--token", TOKEN]) as server:
        release = anyio.Event()
        resonate = _app(server.url, release)
        async with resonate:
            waiting = await resonate.run("refund-7", "approve_refund", "order-7")
            running = await resonate.run("fulfil-3", "fulfil", "order-3")
            failed = await resonate.run("charge-9", "charge", "order-9")
            done = await resonate.run("echo-1", "echo", MARKUP)
            assert await done == MARKUP
            with contextlib.suppress(ApplicationError):  # charge-9 fails, as it should
                await failed
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=chromium,
                                                   args=CHROMIUM_ARGS)
                page = await browser.new_page(viewport={"width": 1500, "height": 640})
                dialogs: list[str] = []
                page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
                await page.goto(server.url + "/")
                await expect(page.locator("#message")).to_contain_text("needs its token")
                await page.fill("#token", TOKEN)
                await page.click("#token-form button")
                rows = page.locator("#executions tbody tr")
                await expect(rows).to_have_count(4)
                for rid, func, state in (("refund-7", "approve_refund", "pending"),
                                         ("fulfil-3", "fulfil", "pending"),
                                         ("charge-9", "charge", "rejected"),
                                         ("echo-1", "echo", "resolved")):
                    row = page.locator(f'#executions tbody tr[data-id="{rid}"]')
                    await expect(row.locator("td").nth(1)).to_have_text(func)
                    await expect(row.locator("td").nth(2)).to_have_text(state)
                await page.select_option("#state", "pending")
                await expect(rows).to_have_count(2)
                await page.select_option("#function", "fulfil")
                await expect(rows).to_have_count(1)
                await page.select_option("#function", "")
                await page.select_option("#state", "")
                await expect(rows).to_have_count(4)
                print("the list: 4 executions, state and function filters work")

                await page.click('#executions tbody tr[data-id="echo-1"]')
                value = page.locator('#tree tbody tr[data-id="echo-1"] td.value')
                await expect(value).to_have_text(f'"{MARKUP}"')
                assert await page.locator("#tree img").count() == 0
                assert await page.evaluate("window.__xss") is None
                print("escaping: a value holding markup is shown as text")

                await page.click('#executions tbody tr[data-id="charge-9"]')
                await expect(page.locator('#tree tbody tr[data-id="charge-9"] td.value')) \
                    .to_contain_text("card declined for order-9")

                await page.click('#executions tbody tr[data-id="refund-7"]')
                steps = page.locator("#tree tbody tr")
                await expect(steps).to_have_count(4)
                kinds = [await steps.nth(i).locator("td").nth(1).inner_text()
                         for i in range(4)]
                assert kinds == ["root", "run", "sleep", "promise"], kinds
                await expect(steps.nth(1).locator("td.value")).to_have_text(
                    '{"sku": "sku-42", "cents": 1299}')
                promise_row = steps.nth(3)
                await expect(promise_row.locator("button.resolve")).to_be_visible()
                await promise_row.locator("input").fill('"approved"')
                await page.screenshot(path=str(screenshot), full_page=True)
                print(f"screenshot: {screenshot}")
                await promise_row.locator("button.resolve").click()
                await expect(page.locator("#tree-state")).to_have_text("resolved")
                with anyio.fail_after(WAIT_MS / 1000):
                    result = await waiting
                assert result == "order-7: approved (1299 cents)", result
                await expect(page.locator('#tree tbody tr[data-id="refund-7"] td.value')) \
                    .to_have_text('"order-7: approved (1299 cents)"')
                print(f"resolving from the page completed the workflow: {result!r}")
                assert not dialogs, dialogs
                await browser.close()
            release.set()
            with anyio.fail_after(WAIT_MS / 1000):
                assert await running == "shipped order-3"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("screenshot", nargs="?", default=str(ROOT / "docs" / "ui.png"))
    parser.add_argument("--chromium", default=os.environ.get("CHROMIUM", "/usr/bin/chromium"))
    args = parser.parse_args(argv)
    asyncio.run(check(Path(args.screenshot), args.chromium))
    print("the web view works in a real browser")
    return 0


if __name__ == "__main__":
    sys.exit(main())
