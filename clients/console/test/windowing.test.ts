// The windowing arithmetic of long lists (src/windowing.ts), without a browser.
import assert from "node:assert/strict";
import { test } from "node:test";
import { bottomOf, offsetsOf, sameRange, windowOf } from "../src/windowing.js";

const fixed = (count: number, h: number) => offsetsOf(count, () => h);

/** The same answer by walking every row: what the binary search must agree with. */
function walk(heights: number[], top: number, viewport: number, overscan: number) {
  const from = Math.max(0, top - overscan);
  const to = top + viewport + overscan;
  let y = 0;
  let i = 0;
  while (i < heights.length && y + heights[i]! <= from) y += heights[i++]!;
  const start = i;
  const before = y;
  while (i < heights.length && y < to) y += heights[i++]!;
  const end = i;
  return { start, end, before, after: heights.slice(end).reduce((a, b) => a + b, 0) };
}

test("row offsets are running totals ending at the whole height", () => {
  assert.deepEqual([...offsetsOf(3, (i) => [10, 20, 30][i]!)], [0, 10, 30, 60]);
  assert.deepEqual([...offsetsOf(0, () => 50)], [0]);
});

test("an empty list renders nothing and has no spacers", () => {
  assert.deepEqual(windowOf(fixed(0, 50), 0, 500, 100), { start: 0, end: 0, before: 0, after: 0 });
});

test("at the top: the rows of the viewport and the overscan below it, the rest a spacer", () => {
  // 1,000 rows of 50 px, a 500 px viewport, 100 px overscan: rows 0..11 (0..600 px).
  assert.deepEqual(windowOf(fixed(1000, 50), 0, 500, 100), { start: 0, end: 12, before: 0, after: 988 * 50 });
});

test("in the middle: overscan on both sides, spacers add up to the whole height", () => {
  const r = windowOf(fixed(1000, 50), 10_000, 500, 100);
  assert.equal(r.start, (10_000 - 100) / 50);
  assert.equal(r.end, (10_000 + 500 + 100) / 50);
  assert.equal(r.before, r.start * 50);
  assert.equal(r.before + (r.end - r.start) * 50 + r.after, 1000 * 50);
});

test("a row partly above the overscan edge is still rendered", () => {
  const r = windowOf(fixed(100, 50), 125, 100, 0);
  assert.equal(r.start, 2); // row 2 spans 100..150 and shows from 125
  assert.equal(r.end, 5); // row 4 spans 200..250 and ends the viewport at 225
});

test("rows of different heights: the window follows the measured ones", () => {
  const heights = [10, 300, 10, 10, 10, 10, 10, 10];
  const r = windowOf(offsetsOf(heights.length, (i) => heights[i]!), 320, 20, 0);
  // Rows 0..10, 10..310, 310..320 end at the viewport's top edge: not shown; 320..340 are.
  assert.deepEqual([r.start, r.end, r.before], [3, 5, 320]);
  assert.equal(r.before + heights.slice(r.start, r.end).reduce((a, b) => a + b, 0) + r.after, 370);
});

test("the binary search agrees with walking the rows, everywhere in a long uneven list", () => {
  let seed = 7;
  const random = () => (seed = (seed * 16807) % 2147483647) / 2147483647;
  const heights = Array.from({ length: 10_000 }, () => 40 + Math.floor(random() * 120));
  const offsets = offsetsOf(heights.length, (i) => heights[i]!);
  const total = offsets[heights.length]!;
  for (let k = 0; k < 500; k++) {
    const top = Math.floor(random() * (total + 2000)) - 1000;
    const viewport = 200 + Math.floor(random() * 800);
    const overscan = Math.floor(random() * 1000);
    assert.deepEqual(windowOf(offsets, top, viewport, overscan), walk(heights, top, viewport, overscan), `top ${top}`);
  }
});

test("scrolled past the end (a list that shrank): the last rows, no negative spacer", () => {
  const r = windowOf(fixed(10, 50), 5_000, 500, 100);
  assert.equal(r.end, 10);
  assert.ok(r.after === 0 && r.before >= 0);
});

test("the bottom of a history shorter than its viewport is its top", () => {
  assert.equal(bottomOf(300, 500), 0);
  assert.equal(bottomOf(5_000, 500), 4_500);
});

test("ranges compare by value", () => {
  assert.ok(sameRange({ start: 1, end: 2, before: 3, after: 4 }, { start: 1, end: 2, before: 3, after: 4 }));
  assert.ok(!sameRange({ start: 1, end: 2, before: 3, after: 4 }, { start: 1, end: 3, before: 3, after: 4 }));
});
