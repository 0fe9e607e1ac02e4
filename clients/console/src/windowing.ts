/**
 * Long lists render only the rows near the viewport: a thread list of thousands of threads and a
 * history of tens of thousands of messages cost the DOM a screenful (plus an overscan) each.
 *
 * `offsetsOf` and `windowOf` are the pure part: given each row's height (measured, or estimated
 * until it was rendered once), where each row starts, and from that (by binary search, so a
 * scroll costs the same at any length) which rows to render and how tall the spacers around them
 * are. `Windowing` is the Lit controller around it: it measures rendered rows after each update, keeps the row the
 * agent was looking at in place when rows are added above it (older history pages) or turn out
 * taller than estimated, and sticks to the bottom of a chat history while the agent is there.
 */

import type { ReactiveController, ReactiveControllerHost } from "lit";

export interface Range {
  start: number; // first row rendered
  end: number; // one past the last row rendered
  before: number; // height of the rows above the rendered ones (the top spacer)
  after: number; // height of the rows below them (the bottom spacer)
}

/** Where each row starts: `offsets[i]` is the top of row i, `offsets[count]` the whole height. */
export function offsetsOf(count: number, heightAt: (i: number) => number): Float64Array {
  const offsets = new Float64Array(count + 1);
  for (let i = 0; i < count; i++) offsets[i + 1] = offsets[i]! + heightAt(i);
  return offsets;
}

/** The smallest index in [lo, hi) for which `holds` is true (it must stay true above it), else hi. */
function firstWhere(lo: number, hi: number, holds: (i: number) => boolean): number {
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (holds(mid)) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

/** The rows that intersect [top - overscan, top + viewport + overscan], with their spacers. */
export function windowOf(offsets: Float64Array, top: number, viewport: number, overscan: number): Range {
  const count = offsets.length - 1;
  const from = Math.max(0, top - overscan);
  const to = top + viewport + overscan;
  const start = firstWhere(0, count, (i) => offsets[i + 1]! > from); // the first row ending below `from`
  const end = firstWhere(start, count, (i) => offsets[i]! >= to); // the first row starting at or past `to`
  return { start, end, before: offsets[start]!, after: offsets[count]! - offsets[end]! };
}

/** The scroll position that shows the end of a list `total` high in a `viewport`. */
export function bottomOf(total: number, viewport: number): number {
  return Math.max(0, total - viewport);
}

export function sameRange(a: Range, b: Range): boolean {
  return a.start === b.start && a.end === b.end && a.before === b.before && a.after === b.after;
}

export interface WindowingOptions<K> {
  /** Height assumed for a row never rendered yet (px, padding included). */
  estimate: number;
  /** Extra height rendered above and below the viewport (px); at least a screenful is wise. */
  overscan: number;
  /** A chat history: opens at the bottom and follows new rows while the agent is at the bottom. */
  bottomAnchored: boolean;
  /** Keep the row in view in place when rows are added or grow above it (a history's older pages).
   * Not for a list whose rows move (the thread list re-sorts): there the agent at the top must see
   * what rises to the top, and the scroll position is what stays. */
  keepInView: boolean;
  scroller: () => HTMLElement | null | undefined;
  /** The rendered rows, in order; each row's key comes from `keyOf`. */
  rows: () => Iterable<HTMLElement>;
  keyOf: (row: HTMLElement) => K;
  /** Offset of the first row inside the scroller's content (what sits above the rows). */
  origin: () => number;
  /** The empty elements above and below the rendered rows, which stand for the rows not rendered.
   * Their heights are set here through the CSSOM: a `style` attribute would break the page's
   * Content-Security-Policy (style-src 'self'). */
  spacers: () => [HTMLElement | null | undefined, HTMLElement | null | undefined];
}

export class Windowing<K> implements ReactiveController {
  range: Range = { start: 0, end: 0, before: 0, after: 0 };
  /** Whether the scroller is at its bottom (chat histories follow new messages only then). */
  atBottom = true;
  private items: readonly unknown[] | null = null;
  private keys: readonly K[] = [];
  private readonly heights = new Map<K, number>();
  // Derived from keys and heights, rebuilt only when either changed (not on every scroll).
  private offsets: Float64Array = new Float64Array(1);
  private index = new Map<K, number>();
  private stale = true;
  private anchor: { key: K; offset: number } | null = null;
  // Where the view was before an update, for when no rendered row was in view to anchor on (the
  // viewport over a spacer): rows added above (an older page) shift it by their height, and the
  // distance to the bottom of the content stays what it was.
  private before: { firstKey: K | undefined; top: number; fromBottom: number } | null = null;
  private frame = 0;
  private resizes: ResizeObserver | null = null;
  private observed: HTMLElement | null = null;

  constructor(private readonly host: ReactiveControllerHost, private readonly options: WindowingOptions<K>) {
    host.addController(this);
  }

  /** A scroller that changes size (the window, a pane shown again after display:none) needs another
   * window; a history at its bottom stays there. */
  private watchSize(scroller: HTMLElement): void {
    if (this.observed === scroller || typeof ResizeObserver === "undefined") return;
    this.resizes?.disconnect();
    this.resizes = new ResizeObserver(() => {
      const current = this.options.scroller();
      if (current && this.options.bottomAnchored && this.atBottom) current.scrollTop = current.scrollHeight;
      this.schedule();
    });
    this.resizes.observe(scroller);
    this.observed = scroller;
  }

  /** During render: which of `items` (every row, in order) to render. The keys, their index and
   * the row offsets are made again only when the array changed (the store replaces it then), not on
   * every render of a scrolling list. */
  slice<T>(items: readonly T[], keyOf: (item: T) => K): Range {
    if (items !== this.items) {
      this.items = items;
      this.keys = items.map(keyOf);
      this.index = new Map(this.keys.map((key, i) => [key, i]));
      this.stale = true;
    }
    this.range = this.compute(this.anchoredTop());
    return this.range;
  }

  /** Where the rows will be scrolled to once the anchor row is put back in its place (rows-relative):
   * the window must be cut around that position, not around the scroll position from before rows
   * were added above, or the anchor row would not even be rendered. */
  private anchoredTop(): number | undefined {
    if (this.options.bottomAnchored && this.atBottom) return undefined;
    const index = this.anchor ? this.index.get(this.anchor.key) : undefined;
    if (index !== undefined) return Math.max(0, this.rowOffsets()[index]! - this.anchor!.offset);
    const shift = this.prependedHeight();
    return shift === undefined ? undefined : Math.max(0, this.before!.top + shift);
  }

  /** The height of the rows added before the former first row in this update, if any were. */
  private prependedHeight(): number | undefined {
    if (!this.before || this.before.firstKey === undefined) return undefined;
    const index = this.index.get(this.before.firstKey);
    return index ? this.rowOffsets()[index] : undefined;
  }

  /** Forget where the agent was (another thread opened): back to the bottom, or the top. */
  reset(): void {
    this.atBottom = true;
    this.anchor = null;
    this.heights.clear(); // keys (a thread's seqs) mean other rows now
    this.stale = true;
    const scroller = this.options.scroller();
    if (scroller && !this.options.bottomAnchored) scroller.scrollTop = 0;
  }

  /** The scroll position that brings row `index` fully into view (for keyboard navigation). */
  reveal(index: number): void {
    const scroller = this.options.scroller();
    if (!scroller) return;
    const offsets = this.rowOffsets();
    const top = this.options.origin() + offsets[index]!;
    const bottom = this.options.origin() + offsets[index + 1]!;
    if (top < scroller.scrollTop) scroller.scrollTop = top;
    else if (bottom > scroller.scrollTop + scroller.clientHeight) scroller.scrollTop = bottom - scroller.clientHeight;
    this.schedule();
  }

  readonly onScroll = (): void => {
    const scroller = this.options.scroller();
    if (!scroller) return;
    this.atBottom = scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 24;
    this.schedule();
  };

  hostUpdate(): void {
    // Before the DOM changes: the first row at least partly in view, and where it is.
    this.anchor = null;
    this.before = null;
    const scroller = this.options.scroller();
    if (!scroller || !this.options.keepInView) return;
    this.before = { firstKey: this.keys[0], top: scroller.scrollTop - this.options.origin(),
      fromBottom: scroller.scrollHeight - scroller.scrollTop };
    for (const row of this.options.rows()) {
      if (row.offsetTop + row.offsetHeight > scroller.scrollTop) {
        this.anchor = { key: this.options.keyOf(row), offset: row.offsetTop - scroller.scrollTop };
        break;
      }
    }
  }

  hostUpdated(): void {
    const scroller = this.options.scroller();
    if (!scroller) return;
    this.watchSize(scroller);
    const [above, below] = this.options.spacers();
    if (above) above.style.height = `${this.range.before}px`;
    if (below) below.style.height = `${this.range.after}px`;
    let measured = false;
    for (const row of this.options.rows()) {
      const key = this.options.keyOf(row);
      // Whole pixels on purpose: fractional heights (getBoundingClientRect) wobble between layouts,
      // and every wobble would be a "new" height, another window and another render.
      const height = row.offsetHeight;
      if (height > 0 && this.heights.get(key) !== height) {
        this.heights.set(key, height);
        measured = true;
        this.stale = true;
      }
    }
    if (this.options.bottomAnchored && this.atBottom) {
      scroller.scrollTop = scroller.scrollHeight;
    } else {
      let restored = false;
      const anchor = this.anchor;
      for (const row of anchor ? this.options.rows() : []) {
        if (this.options.keyOf(row) === anchor!.key) {
          const want = row.offsetTop - anchor!.offset;
          if (Math.abs(scroller.scrollTop - want) >= 1) scroller.scrollTop = want;
          restored = true;
          break;
        }
      }
      if (!restored && this.before && this.prependedHeight() !== undefined) {
        // Nothing below the view changed: keep its distance to the bottom.
        scroller.scrollTop = scroller.scrollHeight - this.before.fromBottom;
      }
    }
    // New heights move the window a little; the next frame renders that (the overscan covers the
    // viewport meanwhile), so a frame never lays the rows out twice.
    if (measured) this.schedule();
  }

  hostDisconnected(): void {
    if (this.frame) cancelAnimationFrame(this.frame);
    this.frame = 0;
    this.resizes?.disconnect();
    this.resizes = null;
    this.observed = null;
  }

  private schedule(): void {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      if (!sameRange(this.range, this.compute())) this.host.requestUpdate();
    });
  }

  private rowOffsets(): Float64Array {
    if (this.stale) {
      const estimate = this.options.estimate;
      this.offsets = offsetsOf(this.keys.length, (i) => this.heights.get(this.keys[i]!) ?? estimate);
      this.stale = false;
    }
    return this.offsets;
  }

  private compute(anchoredTop?: number): Range {
    const scroller = this.options.scroller();
    const viewport = scroller?.clientHeight || globalThis.innerHeight || 800;
    const offsets = this.rowOffsets();
    const top = this.options.bottomAnchored && this.atBottom
      ? bottomOf(offsets[offsets.length - 1]!, viewport)
      : anchoredTop ?? Math.max(0, (scroller?.scrollTop ?? 0) - this.options.origin());
    return windowOf(offsets, top, viewport, this.options.overscan);
  }
}
