/**
 * `<im-console>`: the Instant Messages area — the thread list (most recent first, live; each with
 * its participants, last message time, Related tag and unread count) beside the open thread, and
 * the "New Instant Message" action. Below 720 px wide it shows one pane at a time.
 *
 * A team request offered to this agent is a row of its own: the team, the asker, the question and
 * a Claim button; once someone else takes it, the row says who, greyed, without the button.
 *
 * The list renders only the rows near the viewport (thousands of threads cost a screenful of DOM)
 * and is one stop for Tab: the arrow keys, Home and End move between threads, Enter opens one.
 */

import type { Conversation } from "@helpdesk-im/client";
import { css, html, nothing } from "lit";
import { customElement, query, state } from "lit/decorators.js";
import { repeat } from "lit/directives/repeat.js";
import { offerState, type OfferState, teamNames, threadTitle } from "../team-requests.js";
import { Windowing } from "../windowing.js";
import "./agent-picker.js";
import type { AgentPicker } from "./agent-picker.js";
import { claimNotice, type ConsoleStore } from "../store.js";
import { shared, StoreElement, when } from "./base.js";
import { tombstoneText } from "../message-changes.js";
import "./thread.js";
import type { Thread } from "./thread.js";

/** Every row is this tall (px): its text is cut to one line each, so the list can be windowed exactly. */
const ROW_HEIGHT = 76;

@customElement("im-console")
export class Console extends StoreElement {
  static override styles = [shared, css`
    :host { display: flex; flex-direction: column; height: 100%; min-height: 420px; border: 1px solid var(--im-border);
      border-radius: 8px; overflow: hidden; background: var(--im-bg); }
    .layout { display: grid; grid-template-columns: minmax(260px, 340px) 1fr; grid-template-rows: minmax(0, 1fr);
      flex: 1; min-height: 0; }
    im-thread { flex: 1; min-height: 0; }
    aside { border-right: 1px solid var(--im-border); display: flex; flex-direction: column; min-height: 0; }
    .bar { display: flex; align-items: center; justify-content: space-between; gap: 8px; padding: 10px 12px;
      border-bottom: 1px solid var(--im-border); }
    h2 { font-size: 16px; margin: 0; }
    ol { list-style: none; margin: 0; padding: 0; overflow-y: auto; flex: 1; position: relative; overflow-anchor: none; }
    .spacer { list-style: none; }
    li button {
      width: 100%; height: ${ROW_HEIGHT}px; display: grid; align-content: center; grid-template-columns: 1fr auto; gap: 2px 8px; text-align: left; border: 0;
      border-bottom: 1px solid var(--im-border); border-radius: 0; padding: 10px 12px; background: var(--im-bg);
    }
    li button[aria-current="true"] { background: #e7effc; }
    li button:hover { background: var(--im-bg-alt); }
    li.offer { position: relative; }
    li.offer > button.row { box-shadow: inset 4px 0 0 var(--im-accent); }
    li.offer.claimable > button.row { padding-right: 84px; }
    li.offer.taken > button.row, li.offer.closed > button.row { box-shadow: inset 4px 0 0 var(--im-offline);
      background: var(--im-bg-alt); }
    li.offer.taken .who, li.offer.closed .who { color: var(--im-muted); }
    li.offer > button.claim { position: absolute; right: 12px; top: 50%; transform: translateY(-50%); width: auto;
      height: auto; min-height: 30px; display: inline-block; padding: 4px 14px; border: 1px solid var(--im-accent);
      border-radius: 6px; background: var(--im-accent); color: var(--im-accent-text); font-weight: 600; }
    li.offer > button.claim:hover { background: #174c99; }
    .taken-by { font-style: italic; font-weight: 600; }
    .who { font-weight: 600; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
    .unread .who { font-weight: 800; }
    .time { color: var(--im-muted); font-size: 12px; }
    .last { grid-column: 1 / -1; color: var(--im-muted); font-size: 13px; overflow: hidden; text-overflow: ellipsis;
      white-space: nowrap; }
    .last .deleted { font-style: italic; }
    .tags { grid-column: 1 / -1; display: flex; gap: 6px; align-items: center; min-width: 0; }
    main { min-width: 0; min-height: 0; display: flex; flex-direction: column; }
    .back { display: none; margin: 8px 12px 0; align-self: flex-start; }
    .state { padding: 12px; color: var(--im-muted); }
    .notify { display: flex; flex-wrap: wrap; gap: 6px; align-items: center; padding: 6px 12px;
      border-bottom: 1px solid var(--im-border); font-size: 13px; }
    .notify button { font-size: 13px; padding: 4px 8px; }
    .notify button[aria-pressed="true"] { background: #fff1d6; border-color: #a15c00; color: #5c3400; font-weight: 600; }
    .notify .hint { color: var(--im-muted); }
    .state.error { color: #8a1c12; background: #fdecea; margin: 0; }
    @media (max-width: 719px) {
      .layout { grid-template-columns: 1fr; }
      .layout.open aside { display: none; }
      .layout:not(.open) main { display: none; }
      .back { display: inline-block; }
      aside { border-right: 0; }
    }
  `];

  @state() private openId = "";
  /** The row that holds the list's one Tab stop (roving tabindex). */
  @state() private focusId = "";
  /** Read out by screen readers: how a claim ended when it did not open the thread. */
  @state() private notice = "";
  private readonly window = new Windowing<string>(this, {
    estimate: ROW_HEIGHT,
    overscan: 600,
    bottomAnchored: false,
    keepInView: false,
    scroller: () => this.renderRoot.querySelector<HTMLElement>("ol"),
    rows: () => this.renderRoot.querySelectorAll<HTMLElement>("ol > li[data-conversation]"),
    keyOf: (row) => row.dataset.conversation!,
    origin: () => 0,
    spacers: () => [this.renderRoot.querySelector<HTMLElement>("ol > li.spacer.above"),
      this.renderRoot.querySelector<HTMLElement>("ol > li.spacer.below")],
  });
  @query("im-agent-picker") private picker!: AgentPicker;
  @query("im-thread") private thread!: Thread;

  /** Opens a thread (from the list, a notification, or the host page). */
  open(conversationId: string): void {
    this.openId = conversationId;
    void this.updateComplete.then(() => this.thread?.focusInput());
  }

  private async newIm(): Promise<void> {
    const to = await this.picker.pickRecipients({ title: "New Instant Message" });
    if (!to || !this.store) return;
    const c = await this.store.startConversation(to);
    this.open(c.id);
  }

  /** Claim pressed (in the list or in the open offer): the thread opens on success; else the row
   * now says who was faster, or leaves the list when it is no longer offered to this agent. */
  async claim(conversationId: string): Promise<void> {
    if (!this.store) return;
    const outcome = await this.store.claim(conversationId).catch(() => null); // the store shows the error
    if (!outcome) return;
    this.notice = claimNotice(outcome);
    if ("claimed" in outcome) this.open(conversationId);
    else if ("gone" in outcome && this.openId === conversationId) this.openId = "";
  }

  override render() {
    const store = this.store;
    const items = store?.sortedConversations() ?? [];
    const range = this.window.slice(items, (c) => c.id);
    // The list's one Tab stop is on a rendered row: the focused or open thread while it is in the
    // window, else the first row rendered (a row scrolled out of the DOM cannot hold it).
    const rendered = items.slice(range.start, range.end);
    const tabStop = rendered.some((c) => c.id === this.focusId) ? this.focusId
      : rendered.some((c) => c.id === this.openId) ? this.openId : (rendered[0]?.id ?? "");
    return html`
      <div class="layout ${this.openId ? "open" : ""}">
        <aside aria-label="Instant Messages">
          <div class="bar">
            <h2>Instant Messages</h2>
            <button class="primary" @click=${this.newIm}>New Instant Message</button>
          </div>
          ${store ? this.notificationBar(store) : nothing}
          ${!store || !store.loaded ? html`<p class="state">${store?.error ?? "Loading…"}</p>` : nothing}
          ${store?.loaded && store.error ? html`<p class="state error" role="alert">${store.error}</p>` : nothing}
          ${store?.loaded && items.length === 0 ? html`<p class="state">No threads yet: start one with “New Instant Message”.</p>` : nothing}
          <p class="visually-hidden" role="status">${this.notice}</p>
          <ol aria-label="Threads" @scroll=${this.window.onScroll} @keydown=${(e: KeyboardEvent) => this.onKey(e, items)}>
            <li class="spacer above" aria-hidden="true"></li>
            ${repeat(rendered, (c) => c.id,
              (c, i) => this.row(c, range.start + i, items.length, tabStop))}
            <li class="spacer below" aria-hidden="true"></li>
          </ol>
        </aside>
        <main>
          <button class="back" @click=${() => (this.openId = "")}>← Threads</button>
          <im-thread conversation-id=${this.openId}></im-thread>
        </main>
      </div>
      <im-agent-picker></im-agent-picker>`;
  }

  /** Browser notifications (asked for from this click) and do-not-disturb. */
  private notificationBar(store: ConsoleStore) {
    const permission = store.notificationPermission;
    return html`<div class="notify">
      ${permission === "default" ? html`<button @click=${() => store.enableBrowserNotifications()}>Notify me in this browser</button>`
        : permission === "denied" ? html`<span class="hint">Browser notifications are blocked for this site.</span>` : nothing}
      <button aria-pressed=${store.doNotDisturb ? "true" : "false"} title="No notifications while on"
        @click=${() => store.setDoNotDisturb(!store.doNotDisturb)}>Do not disturb</button>
    </div>`;
  }

  protected override storeReady(store: ConsoleStore): void {
    store.addEventListener("open-thread", this.onOpenThread); // a browser notification was clicked
  }

  override disconnectedCallback(): void {
    super.disconnectedCallback();
    this.store?.removeEventListener("open-thread", this.onOpenThread);
  }

  private readonly onOpenThread = (e: Event) => this.open((e as CustomEvent<string>).detail);

  /** Arrow keys, Home and End move the focus along the list, rendering rows as they come. */
  private onKey(e: KeyboardEvent, items: Conversation[]): void {
    const from = items.findIndex((c) => c.id === (e.target as HTMLElement).dataset.conversation);
    if (from < 0) return;
    const moves: Record<string, number> = { ArrowDown: from + 1, ArrowUp: from - 1, Home: 0, End: items.length - 1 };
    if (!Object.hasOwn(moves, e.key)) return;
    const to = moves[e.key]!;
    e.preventDefault();
    const target = items[Math.max(0, Math.min(items.length - 1, to))]!;
    this.focusId = target.id;
    this.window.reveal(items.indexOf(target));
    void this.updateComplete.then(async () => {
      // The row may need one more render once the scroll brought it into the window.
      let button = this.rowButton(target.id);
      if (!button) {
        this.requestUpdate();
        await this.updateComplete;
        button = this.rowButton(target.id);
      }
      button?.focus();
    });
  }

  private rowButton(id: string): HTMLElement | null {
    return this.renderRoot.querySelector<HTMLElement>(`ol > li[data-conversation="${CSS.escape(id)}"] > button`);
  }

  private row(c: Conversation, index: number, count: number, tabStop: string) {
    const store = this.store!;
    const offer = offerState(c, store.agentId);
    if (offer) return this.offerRow(c, offer, index, count, tabStop);
    const last = c.last_message;
    const lastText = last ? html`${last.sender_id === store.agentId ? "You" : store.nameOf(last.sender_id, c)}: ${
      last.deleted_at ? html`<span class="deleted">${tombstoneText(last)}</span>` : last.body}` : "No messages yet";
    return html`
      <li data-conversation=${c.id} aria-posinset=${index + 1} aria-setsize=${count}>
        <button class=${c.unread_count ? "unread" : ""} aria-current=${c.id === this.openId ? "true" : "false"}
          tabindex=${c.id === tabStop ? 0 : -1} data-conversation=${c.id}
          @click=${() => this.open(c.id)} @focus=${() => (this.focusId = c.id)}>
          <span class="who">${threadTitle(c, store.agentId)}</span>
          <time class="time" datetime=${c.last_message_at ?? c.created_at}>${when(c.last_message_at ?? c.created_at)}</time>
          <span class="last">${lastText}</span>
          <span class="tags">
            ${relatedTag(c)}
            ${c.unread_count ? html`<span class="badge" aria-label="${c.unread_count} unread">${c.unread_count}</span>` : nothing}
          </span>
        </button>
      </li>`;
  }

  /** A team request offered to this agent: the team, the asker, the question, and Claim beside the
   * row (a button cannot hold another); the Claim button shares the row's roving tab stop. */
  private offerRow(c: Conversation, offer: OfferState, index: number, count: number, tabStop: string) {
    const r = c.team_request!;
    const tabindex = c.id === tabStop ? 0 : -1;
    return html`
      <li data-conversation=${c.id} class="offer ${offer}" aria-posinset=${index + 1} aria-setsize=${count}>
        <button class="row" aria-current=${c.id === this.openId ? "true" : "false"} tabindex=${tabindex}
          data-conversation=${c.id} @click=${() => this.open(c.id)} @focus=${() => (this.focusId = c.id)}>
          <span class="who">${r.asked_by.display_name}</span>
          <time class="time" datetime=${r.opened_at}>${when(r.opened_at)}</time>
          <span class="last">${offer === "taken" ? html`<span class="taken-by">Taken by ${r.claimed_by?.display_name}</span> · `
            : offer === "closed" ? html`<span class="taken-by">Offered to others now</span> · ` : nothing}${r.question ?? "No question given"}</span>
          <span class="tags">
            <span class="team">${teamNames(r)} request</span>
            ${relatedTag(c)}
          </span>
        </button>
        ${offer === "claimable" ? html`
          <button class="claim primary" tabindex=${tabindex} data-conversation=${c.id}
            @click=${() => this.claim(c.id)} @focus=${() => (this.focusId = c.id)}>Claim<span class="visually-hidden">
            the ${teamNames(r)} request from ${r.asked_by.display_name}</span></button>` : nothing}
      </li>`;
  }
}

function relatedTag(c: Conversation) {
  return c.related ? html`<span class="related">${c.related.type === "ticket" ? "Ticket" : "Chat"} ${c.related.id}</span>` : nothing;
}

declare global {
  interface HTMLElementTagNameMap {
    "im-console": Console;
  }
}
