/**
 * `<im-thread conversation-id=…>`: one open thread — the Related tag and the participants with
 * their presence at the top, the history (older pages load as you scroll up), who is typing, read
 * markers, and the send box (Enter sends, Shift+Enter is a new line).
 */

import type { Conversation, Message } from "@helpdesk-im/client";
import { css, html, nothing, type PropertyValues } from "lit";
import { customElement, property, query, state } from "lit/decorators.js";
import { repeat } from "lit/directives/repeat.js";
import { shared, STATUS_TEXT, StoreElement, when } from "./base.js";

@customElement("im-thread")
export class Thread extends StoreElement {
  static override styles = [shared, css`
    :host { display: flex; flex-direction: column; min-height: 0; height: 100%; background: var(--im-bg); }
    header { padding: 10px 14px; border-bottom: 1px solid var(--im-border); display: grid; gap: 6px; }
    .people { display: flex; flex-wrap: wrap; gap: 4px 12px; align-items: center; }
    .person { display: inline-flex; align-items: center; gap: 6px; }
    .history { flex: 1; overflow-y: auto; padding: 12px 14px; display: flex; flex-direction: column; gap: 8px;
      overscroll-behavior: contain; }
    .msg { max-width: 80%; content-visibility: auto; contain-intrinsic-size: auto 56px; }
    .msg.mine { align-self: flex-end; text-align: right; }
    .bubble { display: inline-block; text-align: left; padding: 8px 12px; border-radius: 12px; background: var(--im-bg-alt);
      white-space: pre-wrap; overflow-wrap: anywhere; }
    .mine .bubble { background: #dbe8fb; }
    .msg.system { align-self: center; color: var(--im-muted); font-size: 12px; font-style: italic; }
    .meta { font-size: 12px; color: var(--im-muted); margin-bottom: 2px; }
    .seen { font-size: 12px; color: var(--im-muted); align-self: flex-end; }
    .pending .bubble { opacity: 0.65; }
    .typing { min-height: 20px; padding: 0 14px; font-size: 12px; color: var(--im-muted); }
    .older { align-self: center; }
    form { display: flex; gap: 8px; padding: 10px 14px; border-top: 1px solid var(--im-border); }
    textarea { flex: 1; font: inherit; resize: none; padding: 8px 10px; border: 1px solid var(--im-border);
      border-radius: 6px; min-height: 40px; max-height: 140px; }
    .empty { color: var(--im-muted); align-self: center; margin: auto; }
    .failed { margin: 0 14px; padding: 6px 10px; border-radius: 6px; background: #fdecea; color: #8a1c12;
      overflow-wrap: anywhere; }
  `];

  @property({ attribute: "conversation-id" }) conversationId = "";
  @state() private draft = "";
  @query(".history") private history!: HTMLElement;
  @query("textarea") private input!: HTMLTextAreaElement;
  private atBottom = true;
  private lastCount = 0;

  override updated(changed: PropertyValues): void {
    if (changed.has("conversationId") && this.store && this.conversationId) {
      this.lastCount = 0;
      this.atBottom = true;
      void this.store.open(this.conversationId);
    }
    const t = this.store && this.conversationId ? this.store.thread(this.conversationId) : null;
    const count = t?.messages.length ?? 0;
    if (this.history && count !== this.lastCount) {
      // New messages at the bottom: follow them if we were there; older ones on top: keep our place.
      if (this.atBottom) this.history.scrollTop = this.history.scrollHeight;
      this.lastCount = count;
    }
    if (this.atBottom && this.shown()) void this.store!.markRead(this.conversationId).catch(() => undefined);
  }

  protected override storeReady(): void {
    if (this.conversationId) void this.store!.open(this.conversationId);
  }

  /** Focus the send box (after the thread was opened from a list or a button). */
  focusInput(): void {
    void this.updateComplete.then(() => this.input?.focus());
  }

  private onScroll(): void {
    const h = this.history;
    this.atBottom = h.scrollHeight - h.scrollTop - h.clientHeight < 24;
    if (h.scrollTop < 80 && this.store) {
      const before = h.scrollHeight;
      void this.store.loadOlder(this.conversationId).then(() =>
        this.updateComplete.then(() => (h.scrollTop += h.scrollHeight - before)));
    }
    if (this.atBottom && this.shown()) void this.store!.markRead(this.conversationId).catch(() => undefined);
  }

  /** Read only what the agent can see: the page in front, and this thread on it (a console left
   * open in a hidden part of the host page must not mark replies read). */
  private shown(): boolean {
    return Boolean(this.store && this.conversationId) && document.visibilityState === "visible"
      && this.checkVisibility();
  }

  private async submit(e: Event): Promise<void> {
    e.preventDefault();
    const body = this.draft.trim();
    if (!body || !this.store) return;
    this.draft = "";
    this.atBottom = true;
    await this.store.send(this.conversationId, body).catch(() => undefined);
  }

  private onKey(e: KeyboardEvent): void {
    if (e.key === "Enter" && !e.shiftKey) {
      e.preventDefault();
      void this.submit(e);
    }
  }

  private onInput(e: Event): void {
    this.draft = (e.target as HTMLTextAreaElement).value;
    if (this.draft) this.store?.typingNow(this.conversationId);
  }

  override render() {
    const store = this.store;
    if (!store || !this.conversationId) return html`<p class="empty">Pick a thread on the left, or start a new one.</p>`;
    const c = store.conversations.get(this.conversationId);
    const t = store.thread(this.conversationId);
    const typing = store.typingIn(this.conversationId).map((a) => store.nameOf(a, c));
    return html`
      <header>
        ${c?.related ? this.relatedTag(c) : nothing}
        <div class="people" aria-label="Participants">
          ${(c?.participants ?? []).map((p) => {
            const status = p.id === store.agentId ? "online" : (store.presence.get(p.id) ?? "offline");
            return html`<span class="person"><span class="dot ${status}" aria-hidden="true"></span>${p.display_name}${p.id === store.agentId ? " (you)" : ""}<span class="visually-hidden">, ${STATUS_TEXT[status]}</span></span>`;
          })}
        </div>
      </header>
      <div class="history" role="log" aria-label="Messages" aria-live="polite" tabindex="0" @scroll=${this.onScroll}>
        ${t.oldestLoaded || t.messages.length === 0 ? nothing
          : html`<button class="older" @click=${() => store.loadOlder(this.conversationId)}>Load older messages</button>`}
        ${t.loading && t.messages.length === 0 ? html`<p class="empty">Loading…</p>` : nothing}
        ${repeat(t.messages, (m) => m.seq, (m) => this.message(m, c))}
        ${store.pending(this.conversationId).map((p) => html`
          <div class="msg mine pending"><div class="meta">Sending…</div><div class="bubble">${p.body}</div></div>`)}
        ${this.seen(t.messages, t.readBy, c)}
      </div>
      ${store.failed.has(this.conversationId) ? html`
        <p class="failed" role="alert">Not sent: “${store.failed.get(this.conversationId)!.body}” —
          ${store.failed.get(this.conversationId)!.reason}
          <button @click=${() => { store.failed.delete(this.conversationId); this.requestUpdate(); }}>Dismiss</button></p>` : nothing}
      <div class="typing" aria-live="polite">${typing.length ? `${typing.join(", ")} ${typing.length > 1 ? "are" : "is"} typing…` : ""}</div>
      <form @submit=${this.submit}>
        <label class="visually-hidden" for="say">Message</label>
        <textarea id="say" rows="1" placeholder="Write a message" maxlength="10000" .value=${this.draft}
          @input=${this.onInput} @keydown=${this.onKey}></textarea>
        <button type="submit" class="primary" ?disabled=${!this.draft.trim()}>Send</button>
      </form>`;
  }

  private relatedTag(c: Conversation) {
    const r = c.related!;
    const label = `${r.type === "ticket" ? "Ticket" : "Live chat"} ${r.id}${r.title ? ` · ${r.title}` : ""}`;
    const url = this.store!.relatedUrl(r.type, r.id);
    return html`<div><span class="visually-hidden">Related: </span>${url
      ? html`<a class="related" href=${url} data-related=${`${r.type}:${r.id}`}>Related: ${label}</a>`
      : html`<span class="related" data-related=${`${r.type}:${r.id}`}>Related: ${label}</span>`}</div>`;
  }

  private message(m: Message, c: Conversation | undefined) {
    const store = this.store!;
    if (m.kind === "system") return html`<div class="msg system" data-seq=${m.seq}>${m.body}</div>`;
    const mine = m.sender_id === store.agentId;
    return html`
      <div class="msg ${mine ? "mine" : ""}" data-seq=${m.seq}>
        <div class="meta">${mine ? "You" : store.nameOf(m.sender_id, c)} · <time datetime=${m.created_at}>${when(m.created_at)}</time></div>
        <div class="bubble">${m.body}</div>
      </div>`;
  }

  /** "Seen by Ben" under the newest of my messages that the others have read. */
  private seen(messages: Message[], readBy: Map<string, number>, c: Conversation | undefined) {
    const last = [...messages].reverse().find((m) => m.sender_id === this.store!.agentId);
    if (!last) return nothing;
    const readers = [...readBy.entries()].filter(([, seq]) => seq >= last.seq).map(([a]) => this.store!.nameOf(a, c));
    return readers.length ? html`<div class="seen">Seen by ${readers.join(", ")}</div>` : nothing;
  }
}

declare global {
  interface HTMLElementTagNameMap {
    "im-thread": Thread;
  }
}
