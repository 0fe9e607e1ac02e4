"""The `console` scenario: the agent console in Chromium (Debian's, driven by Playwright) against the
bench's stack, at the sizes the console issue names — 1,000 threads in the list and a history of
10,000 messages — measured as the browser sees it:

- paint: from navigation start to the first frame that shows the thread list (signed in already),
  over several loads; baseline: reading the whole list over HTTP from Python (the data it needs);
- frames while scrolling (requestAnimationFrame intervals): the thread list top to bottom, the
  history upwards while older pages load, and the whole loaded history flung through; a frame is
  dropped when its interval exceeds 1.5× the median interval of the same page standing still
  (the baseline, measured in the same run);
- idle: renderer main-thread busy time (DevTools `Performance.getMetrics` TaskDuration) of the
  console left alone, against a blank page over the same time; requests it makes meanwhile.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from pathlib import Path
from typing import Any

from .stats import percentile

ROOT = Path(__file__).resolve().parents[1]
DIST = ROOT / "clients" / "console" / "dist"
CHROMIUM = "/usr/bin/chromium"
# A fast fling through the loaded history: 6,000 px/s at 60 frames per second.
FLING_PX = 100
TENANT = "console"

# Runs in the page before its own scripts: signed in (the demo keeps its session here), and the
# first animation frame in which the list has rows noted (rAF callbacks run just before a paint).
INIT = """session => {
  if (!location.pathname.startsWith('/console/')) return;
  sessionStorage.setItem('im-demo-session', JSON.stringify(session));
  const tick = () => {
    const rows = document.querySelector('im-console')?.shadowRoot?.querySelector('ol > li[data-conversation]');
    if (rows) window.__painted = performance.now(); else requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
}"""

# Frame intervals while standing still (ms) or while moving a scroller by `step` px per frame.
# `through`: keep going for the whole time even at the end of the scroller (the history waits at
# its top for older pages to arrive); otherwise stop at the end.
FRAMES = """([what, step, ms, through]) => new Promise(done => {
  const root = document.querySelector('im-console').shadowRoot;
  const el = what === 'list' ? root.querySelector('ol') : root.querySelector('im-thread').renderRoot.querySelector('.history');
  const gaps = []; let last = null; const t0 = performance.now();
  // What the long frames spent their time on (Long Animation Frames): script, style and layout, or
  // neither (garbage collection, raster); the five longest are kept with the figures.
  const long = [];
  const observer = new PerformanceObserver(list => { for (const e of list.getEntries()) long.push({
    ms: Math.round(e.duration), before_render_ms: Math.round(e.renderStart - e.startTime),
    style_layout_ms: Math.round(e.startTime + e.duration - e.styleAndLayoutStart),
    script_ms: Math.round(e.scripts.reduce((a, s) => a + s.duration, 0)),
    scripts: e.scripts.slice(0, 3).map(s => `${s.invoker} ${Math.round(s.duration)} ms`)}); });
  observer.observe({type: 'long-animation-frame'});
  const frame = t => {
    if (last !== null) gaps.push(t - last);
    last = t;
    if (step) el.scrollTop += step;
    const end = step > 0 ? el.scrollTop + el.clientHeight >= el.scrollHeight - 1 : step < 0 ? el.scrollTop <= 0 : false;
    if (t - t0 < ms && (through || !end)) requestAnimationFrame(frame);
    else { observer.disconnect(); done({gaps, scrollTop: el.scrollTop, long: long.sort((a, b) => b.ms - a.ms).slice(0, 5)}); }
  };
  requestAnimationFrame(frame);
})"""

HELD = "() => { const t = document.querySelector('im-console').shadowRoot.querySelector('im-thread'); " \
       "return t.store.thread(t.conversationId).messages.length; }"
# Up to `pages` older pages of the open thread, as scrolling up would ask for them.
LOAD_OLDER = """async pages => { const t = document.querySelector('im-console').shadowRoot.querySelector('im-thread');
  const s = t.store; const id = t.conversationId;
  for (let i = 0; i < pages && !s.thread(id).oldestLoaded; i++) await s.loadOlder(id);
  return [s.thread(id).messages.length, s.thread(id).oldestLoaded]; }"""
DOM_ROWS = """() => { const root = document.querySelector('im-console').shadowRoot;
  return {list: root.querySelectorAll('ol > li[data-conversation]').length,
          history: root.querySelector('im-thread').renderRoot.querySelectorAll('.history > .row').length}; }"""


def frames_summary(gaps: list[float], still_median: float) -> dict[str, Any]:
    dropped = [g for g in gaps if g > 1.5 * still_median]
    return {"frames": len(gaps), "dropped": len(dropped),
            "dropped_at": [i for i, g in enumerate(gaps) if g > 1.5 * still_median][:20],
            "dropped_pct": round(100 * len(dropped) / len(gaps), 2) if gaps else None,
            "p50_ms": round(percentile(gaps, 50), 2) if gaps else None,
            "p99_ms": round(percentile(gaps, 99), 2) if gaps else None,
            "max_ms": round(max(gaps), 2) if gaps else None}


def js_gzip_kib() -> float:
    return round(sum(len(gzip.compress(p.read_bytes(), 9)) for p in (DIST / "assets").glob("*.js")) / 1024, 1)


async def seed(bench, threads: int, messages: int) -> tuple[str, str, str]:
    """Viewer r0 with `threads` threads with s0, the newest one `messages` long; its conversation id."""
    st = bench.stack
    convs = await bench.pairs(TENANT, 1)
    long_id = convs[0]["id"]
    t0 = time.monotonic()
    fill = await bench.load(bench.traffic(convs, "console", mode="count", count=messages - 1, concurrency=32,
                                          receive=False, settle_s=0))
    async with st.http(st.token(TENANT, "r0")) as http:
        gate = asyncio.Semaphore(16)

        async def start(i: int) -> None:
            async with gate:
                r = await http.post("/v1/conversations", json={
                    "participant_ids": ["s0"], "related": {"type": "ticket", "id": f"T-{i}", "title": f"Case {i}"}})
                r.raise_for_status()

        await asyncio.gather(*(start(i) for i in range(1, threads)))
    async with st.http(st.token(TENANT, "s0")) as http:  # the long thread back on top of the list
        r = await http.post(f"/v1/conversations/{long_id}/messages", json={"body": "the newest", "client_msg_id": "top"})
        r.raise_for_status()
    bench.say(f"  seeded {threads} threads and {fill['accepted'] + 1} messages in {time.monotonic() - t0:.1f} s")
    return long_id, st.token(TENANT, "r0"), "r0"


async def open_console(browser, url: str, session: dict, requests: list[str] | None = None):
    """A browser context of its own, signed in (INIT), with the console loaded until its list is
    painted — (context, page); what the page said if it never is. `requests` collects every URL
    the page asks for."""
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    await context.add_init_script(f"({INIT})({json.dumps(session)})")
    page = await context.new_page()
    if requests is not None:
        page.on("request", lambda r: requests.append(r.url))
    said: list[str] = []
    page.on("console", lambda m: said.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: said.append(f"page error: {e}"))
    await page.goto(url)
    try:
        # A function, not an expression: the page's CSP forbids eval.
        await page.wait_for_function("() => window.__painted !== undefined", timeout=60_000)
    except Exception as exc:
        raise RuntimeError(f"the console never painted its list; the page said: {said[:10]}") from exc
    return context, page


async def measure(bench, threads: int, messages: int, scroll_s: float, idle_s: float, loads: int,
                  settle_s: float) -> dict[str, Any]:
    from playwright.async_api import async_playwright

    if not (DIST / "index.html").is_file():
        raise RuntimeError("the console is not built: `make console` (make bench does it)")
    st = bench.stack
    long_id, token, viewer = await seed(bench, threads, messages)
    session = {"tenant": TENANT, "agent": viewer, "name": viewer, "token": token, "via": "token"}
    url = f"{st.api_url}/console/#/im"

    # Baseline for the paint: the list's data over HTTP, every page, from Python.
    fetches = []
    async with st.http(token) as http:
        for _ in range(loads):
            t0, cursor, n = time.perf_counter(), None, 0
            while True:
                r = await http.get("/v1/conversations", params={"limit": 100, **({"cursor": cursor} if cursor else {})})
                r.raise_for_status()
                n += len(r.json()["items"])
                cursor = r.json().get("next_cursor")
                if not cursor:
                    break
            fetches.append(1000 * (time.perf_counter() - t0))
    assert n == threads, f"the viewer has {n} threads, not {threads}"

    out: dict[str, Any] = {"threads": threads, "messages": messages, "js_gzip_kib": js_gzip_kib(),
                           "list_fetch_ms": {"p50": round(percentile(fetches, 50), 1)}}
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        try:
            paints = []
            for _ in range(loads):
                context, page = await open_console(browser, url, session)
                paints.append(await page.evaluate("window.__painted"))
                await context.close()
            out["paint_ms"] = {"first": round(paints[0], 1), "p50": round(percentile(paints, 50), 1),
                               "max": round(max(paints), 1)}
            bench.say(f"  paint: first {paints[0]:.0f} ms, p50 {percentile(paints, 50):.0f} ms "
                      f"(the list over HTTP alone: {percentile(fetches, 50):.0f} ms)")

            context, page = await open_console(browser, url, session)
            ms = 1000 * scroll_s
            still = (await page.evaluate(FRAMES, ["list", 0, 3000]))["gaps"]
            still_median = percentile(still, 50)
            out["still_frames"] = frames_summary(still, still_median)
            listed = await page.evaluate(FRAMES, ["list", 120, ms])
            out["list_scroll"] = {**frames_summary(listed["gaps"], still_median), "px_per_frame": 120,
                                  "longest_frames": listed["long"],
                                  "reached_px": round(listed["scrollTop"]), "dom_rows": (await page.evaluate(DOM_ROWS))["list"]}
            await page.evaluate(FRAMES, ["list", -1_000_000, 1000])  # back to the top
            root = page.locator("im-console")
            await root.locator(f"ol > li[data-conversation='{long_id}'] button").click()
            await page.wait_for_function(f"() => ({HELD})() > 0", timeout=60_000)
            upward = await page.evaluate(FRAMES, ["history", -40, ms, True])
            out["history_scroll_loading"] = {**frames_summary(upward["gaps"], still_median), "px_per_frame": -40,
                                             "longest_frames": upward["long"],
                                             "messages_loaded": await page.evaluate(HELD)}
            bench.say(f"  list scrolled ({out['list_scroll']['frames']} frames); history upwards: "
                      f"{out['history_scroll_loading']['frames']} frames, {out['history_scroll_loading']['messages_loaded']} loaded")
            t0 = time.monotonic()
            while True:
                held, oldest = await page.evaluate(LOAD_OLDER, 20)
                bench.say(f"    {held} messages in the page after {time.monotonic() - t0:.1f} s")
                if oldest:
                    break
            bench.say(f"  the whole history loaded in the page in {time.monotonic() - t0:.1f} s")
            out["history_load_all_s"] = round(time.monotonic() - t0, 1)
            assert held == messages, f"the thread holds {held} messages, not {messages}"
            await page.evaluate(FRAMES, ["history", 1_000_000, 1000])  # to the bottom
            await page.evaluate(FRAMES, ["history", 0, 500])  # and the rows there rendered
            fling = await page.evaluate(FRAMES, ["history", -FLING_PX, ms])
            out["history_fling_loaded"] = {**frames_summary(fling["gaps"], still_median), "px_per_frame": -FLING_PX,
                                           "longest_frames": fling["long"],
                                           "dom_rows": (await page.evaluate(DOM_ROWS))["history"]}
            bench.say(f"  frames dropped: list {out['list_scroll']['dropped_pct']} %, history while loading "
                      f"{out['history_scroll_loading']['dropped_pct']} %, loaded history flung "
                      f"{out['history_fling_loaded']['dropped_pct']} % (standing still: {out['still_frames']['dropped_pct']} %)")

            # Idle: a console freshly opened on the long thread and then left alone (after the
            # scrolling above the page would still be collecting its garbage), against a blank page.
            await context.close()
            requests: list[str] = []
            context, page = await open_console(browser, url, session, requests)
            await page.locator("im-console").locator(f"ol > li[data-conversation='{long_id}'] button").click()
            await page.wait_for_function(f"() => ({HELD})() > 0", timeout=60_000)
            await asyncio.sleep(settle_s)  # what loading left to do (timers, GC) is not idleness
            cdp = await context.new_cdp_session(page)
            await cdp.send("Performance.enable")
            blank_page = await (await browser.new_context()).new_page()
            blank = await blank_page.context.new_cdp_session(blank_page)
            await blank.send("Performance.enable")

            async def metrics(session) -> dict[str, float]:
                return {m["name"]: m["value"] for m in (await session.send("Performance.getMetrics"))["metrics"]}

            requests.clear()
            before = (await metrics(cdp), await metrics(blank))
            t0 = time.monotonic()
            await asyncio.sleep(idle_s)  # measuring idleness: nothing to wait for but time
            after = (await metrics(cdp), await metrics(blank))
            span = time.monotonic() - t0
            out["idle"] = {"seconds": round(span, 1),
                           "console_cores": round((after[0]["TaskDuration"] - before[0]["TaskDuration"]) / span, 5),
                           "blank_page_cores": round((after[1]["TaskDuration"] - before[1]["TaskDuration"]) / span, 5),
                           "requests": len(requests),
                           # Work the page did meanwhile: none, if nothing wakes it.
                           "layouts": after[0]["LayoutCount"] - before[0]["LayoutCount"],
                           "style_recalcs": after[0]["RecalcStyleCount"] - before[0]["RecalcStyleCount"]}
            bench.say(f"  idle console: {out['idle']['console_cores']} cores "
                      f"(a blank page: {out['idle']['blank_page_cores']}), {len(requests)} requests, "
                      f"{out['idle']['layouts']:.0f} layouts, {out['idle']['style_recalcs']:.0f} style recalcs in {span:.0f} s")
        finally:
            await browser.close()
    return out
