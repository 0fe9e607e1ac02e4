/** Pure logic: the reconnect and retry waits (no server involved). */

import assert from "node:assert/strict";
import { test } from "node:test";
import { Backoff, sleep } from "../src/index.js";

test("waits double up to the cap, each jittered within its upper half", () => {
  const lows = new Backoff({ initialMs: 100, maxMs: 1_000 }, () => 0);
  assert.deepEqual([1, 2, 3, 4, 5, 6].map(() => lows.next()), [50, 100, 200, 400, 500, 500]);
  const highs = new Backoff({ initialMs: 100, maxMs: 1_000 }, () => 0.999_999);
  const top = [1, 2, 3, 4, 5].map(() => Math.round(highs.next()));
  assert.deepEqual(top, [100, 200, 400, 800, 1_000]);
});

test("a reset starts from the shortest wait again", () => {
  const b = new Backoff({ initialMs: 100, maxMs: 10_000 }, () => 0);
  b.next();
  b.next();
  b.reset();
  assert.equal(b.next(), 50);
});

test("an aborted sleep rejects with the reason at once", async () => {
  const stop = new AbortController();
  const waiting = sleep(60_000, stop.signal);
  stop.abort(new Error("stopped"));
  await assert.rejects(waiting, /stopped/);
});
