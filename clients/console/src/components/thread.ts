/**
 * `<im-thread conversation-id=…>`: one open thread — the Related tag and the participants with
 * their presence at the top, the history (older pages load as you scroll up; only the messages
 * near the viewport are in the DOM, so a history of any length scrolls smoothly), who is typing,
 * read markers, and the send box (Enter sends, Shift+Enter is a new line).
 *
 * The agent's own text messages offer Edit and Delete (shown on hover or keyboard focus) while the
 * edit window lasts as far as the console can tell; the server decides, and its refusal is shown
 * on the message. Edit opens the body in place (Enter saves, Shift+Enter is a new line, Escape
 * cancels); Delete asks first. Edited messages say "(edited)"; a deleted one is a muted
 * "Message deleted" line. Changes made elsewhere arrive live (`message.updated`).
 *
 * A thread that asked teams says in its header whom it waits for or who took it (the asker can
 * release it back to the teams); a team request merely offered to this agent shows the question
 * and Claim instead of a history it may not read yet.
 */

import { ApiError, type Conversation, type Message } from "@helpdesk-im/client";
import { css, html, nothing, type PropertyValues } from "lit";
import { customElement, property, query, state } from "lit/decorators.js";
import { repeat } from "lit/directives/repeat.js";
import { editable, isDeleted, isEdited, nextExpiry, tombstoneText } from "../message-changes.js";
import { Windowing } from "../windowing.js";
import { claimNotice, type ConsoleStore } from "../store.js";
import { offerState, requestStatus, teamNames } from "../team-requests.js";
import { shared, STATUS_TEXT, StoreElement, when } from "./base.js";

/** Older messages are asked for when the agent scrolls this close to the top (px). */
const LOAD_OLDER_WITHIN = 600;

/** The message being edited in place: its seq and the text typed so far. */
interface Editing {
  seq: number;
  draft: string;
  saving: boolean;
}

@customElement("im-thread")
export class Thread extends StoreElement {
  static override styles = [shared, css`
    :host { display: flex; flex-direction: column; min-height: 0; height: 100%; background: var(--im-bg); }
    header { padding: 10px 14px; border-bottom: 1px solid var(--im-border); display: grid; gap: 6px; }
    .top { display: flex; justify-content: space-between; align-items: center; gap: 8px; }
    .mute { font-size: 12px; padding: 2px 8px; }
    .mute[aria-pressed="true"] { background: #fff1d6; border-color: #a15c00; color: #5c3400; font-weight: 600; }
    .people { display: flex; flex-wrap: wrap; gap: 4px 12px; align-items: center; }
    .person { display: inline-flex; align-items: center; gap: 6px; }
    .history { flex: 1; overflow-y: auto; padding: 12px 14px; display: flex; flex-direction: column;
      overscroll-behavior: contain; position: relative; overflow-anchor: none; }
    .row { display: flex; flex-direction: column; padding-bottom: 8px; flex: none; contain: layout style; }
    .spacer { flex: none; }
    .msg { max-width: 80%; }
    .msg.mine { align-self: flex-end; text-align: right; }
    .bubble { display: inline-block; text-align: left; padding: 8px 12px; border-radius: 12px; background: var(--im-bg-alt);
      white-space: pre-wrap; overflow-wrap: anywhere; }
    .mine .bubble { background: #dbe8fb; }
    .msg.system { align-self: center; color: var(--im-muted); font-size: 12px; font-style: italic; }
    .meta { font-size: 12px; color: var(--im-muted); margin-bottom: 2px; }
    .seen { font-size: 12px; color: var(--im-muted); align-self: flex-end; }
    .pending .bubble { opacity: 0.65; }
    .line { display: flex; align-items: center; justify-content: flex-end; gap: 6px; }
    .line .bubble { min-width: 0; }
    .actions { display: inline-flex; gap: 4px; flex: none; opacity: 0; }
    .msg:hover .actions, .msg:focus-within .actions { opacity: 1; }
    @media (hover: none) { .actions { opacity: 1; } }
    .actions button, .confirm button { font-size: 12px; padding: 2px 8px; min-height: 28px; }
    button.danger { background: #b42318; border-color: #b42318; color: #fff; }
    .edited { font-style: italic; }
    .msg.deleted .tombstone { display: inline-block; padding: 4px 12px; border: 1px dashed var(--im-border);
      border-radius: 12px; color: var(--im-muted); font-style: italic; font-size: 13px; }
    .msg.editing { width: 80%; }
    .edit-box { display: grid; gap: 6px; text-align: left; }
    .edit-box textarea { font: inherit; width: 100%; resize: vertical; padding: 8px 10px; border: 1px solid var(--im-accent);
      border-radius: 8px; min-height: 60px; max-height: 240px; }
    .edit-actions, .confirm { display: flex; flex-wrap: wrap; gap: 6px; align-items: center; justify-content: flex-end; }
    .confirm { margin-top: 6px; font-size: 13px; }
    .edit-actions .hint { margin-right: auto; font-size: 12px; color: var(--im-muted); }
    .edit-actions button { font-size: 13px; padding: 4px 12px; }
    .change-error { margin: 6px 0 0; padding: 4px 8px; border-radius: 6px; background: #fdecea; color: #8a1c12;
      font-size: 12px; text-align: left; overflow-wrap: anywhere; }
    .pending, .seen { margin-bottom: 8px; }
    .typing { min-height: 20px; padding: 0 14px; font-size: 12px; color: var(--im-muted); }
    .older { align-self: center; }
    form.send { display: flex; gap: 8px; padding: 10px 14px; border-top: 1px solid var(--im-border); }
    form.send textarea { flex: 1; font: inherit; resize: none; padding: 8px 10px; border: 1px solid var(--im-border);
      border-radius: 6px; min-height: 40px; max-height: 140px; }
    .empty { color: var(--im-muted); align-self: center; margin: auto; }
    .failed { margin: 0 14px; padding: 6px 10px; border-radius: 6px; background: #fdecea; color: #8a1c12;
      overflow-wrap: anywhere; }
    .request { display: flex; flex-wrap: wrap; align-items: center; gap: 6px 10px; font-size: 13px; }
    .request .state { font-weight: 600; }
    .request button { font-size: 12px; padding: 2px 10px; min-height: 28px; }
    .offer { flex: 1; overflow-y: auto; padding: 20px 18px; display: flex; flex-direction: column; gap: 12px;
      align-items: flex-start; }
    .offer h3 { margin: 0; font-size: 16px; }
    .offer blockquote { margin: 0; padding: 10px 14px; border-left: 4px solid var(--im-accent); background: var(--im-bg-alt);
      border-radius: 0 8px 8px 0; white-space: pre-wrap; overflow-wrap: anywhere; max-width: 100%; }
    .offer .state { margin: 0; color: var(--im-muted); }
    .offer .hint { margin: 0; color: var(--im-muted); font-size: 13px; }
  `];

  @property({ attribute: "conversation-id" }) conversationId = "";
  @state() private draft = "";
  /** How the last Claim pressed here ended, when it did not make the thread this agent's. */
  @state() private claimNote = "";
  @state() private claiming = false;
  /** One of the agent's messages open for editing, or the seq whose deletion awaits confirmation. */
  @state() private editing: Editing | null = null;
  @state() private confirming: number | null = null;
  @state() private deleting = false;
  /** Why the server refused the last change of a message (shown under it). */
  @state() private changeError: { seq: number; text: string } | null = null;
  @query(".history") private history!: HTMLElement;
  @query("#say") private input!: HTMLTextAreaElement;
  // New messages at the bottom are followed while the agent is there; older ones loaded on top,
  // or rows taller than estimated, leave the message in view where it was.
  private readonly window = new Windowing<number>(this, {
    estimate: 64,
    overscan: 900,
    bottomAnchored: true,
    keepInView: true,
    scroller: () => this.history,
    rows: () => this.renderRoot.querySelectorAll<HTMLElement>(".history > .row"),
    keyOf: (row) => Number(row.dataset.seq),
    origin: () => this.renderRoot.querySelector<HTMLElement>(".history > .spacer")?.offsetTop ?? 0,
    spacers: () => [this.renderRoot.querySelector<HTMLElement>(".history > .spacer.above"),
      this.renderRoot.querySelector<HTMLElement>(".history > .spacer.below")],
  });

  private openedAtSeq: number | null = null;
  /** Re-renders when the next of the agent's messages leaves the edit window (its buttons go). */
  private expiry: ReturnType<typeof setTimeout> | undefined;
  // Back in front of the agent: what arrived meanwhile is read now (updated() marks it).
  private readonly onVisibility = () => this.requestUpdate();

  override connectedCallback(): void {
    super.connectedCallback();
    document.addEventListener("visibilitychange", this.onVisibility);
  }

  override disconnectedCallback(): void {
    super.disconnectedCallback();
    document.removeEventListener("visibilitychange", this.onVisibility);
    clearTimeout(this.expiry);
  }

  override willUpdate(changed: PropertyValues): void {
    if (changed.has("conversationId")) {
      this.window.reset();
      this.openedAtSeq = null;
      this.claimNote = "";
      this.editing = null;
      this.confirming = null;
      this.changeError = null;
    }
    // Deleted meanwhile (by an admin, from another tab): nothing left to edit or delete.
    const open = this.editing?.seq ?? this.confirming;
    if (open != null && this.store && this.conversationId) {
      const m = this.store.thread(this.conversationId).messages.find((x) => x.seq === open);
      if (m && isDeleted(m)) {
        this.editing = null;
        this.confirming = null;
      }
    }
  }

  override updated(changed: PropertyValues): void {
    if (changed.has("conversationId") && this.store && this.conversationId) {
      void this.store.open(this.conversationId);
    }
    if (this.window.atBottom && this.shown()) void this.store!.markRead(this.conversationId).catch(() => undefined);
    this.scheduleExpiry();
  }

  private scheduleExpiry(): void {
    clearTimeout(this.expiry);
    const store = this.store;
    if (!store || !this.conversationId) return;
    const now = Date.now();
    const at = nextExpiry(store.thread(this.conversationId).messages, store.agentId, now, store.editWindowMs);
    if (at !== null) this.expiry = setTimeout(() => this.requestUpdate(), Math.min(at - now + 50, 2 ** 31 - 1));
  }

  protected override storeReady(): void {
    if (this.conversationId) void this.store!.open(this.conversationId);
  }

  /** Focus the send box (after the thread was opened from a list or a button); an offer's Claim. */
  focusInput(): void {
    void this.updateComplete.then(() => (this.input ?? this.renderRoot.querySelector<HTMLElement>(".offer button.claim"))?.focus());
  }

  private async claim(): Promise<void> {
    const store = this.store;
    const id = this.conversationId;
    if (!store || this.claiming) return;
    this.claiming = true;
    try {
      const outcome = await store.claim(id).catch(() => null); // the store shows the error
      if (id !== this.conversationId || !outcome) return;
      this.claimNote = claimNotice(outcome);
      if ("claimed" in outcome) this.focusInput();
    } finally {
      this.claiming = false;
    }
  }

  private onScroll(): void {
    this.window.onScroll();
    if (this.history.scrollTop < LOAD_OLDER_WITHIN && this.store) void this.store.loadOlder(this.conversationId);
    if (this.window.atBottom && this.shown()) void this.store!.markRead(this.conversationId).catch(() => undefined);
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
    this.window.atBottom = true;
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
    if (!c && this.claimNote) return html`<p class="empty" role="status">${this.claimNote}</p>`;
    if (c && offerState(c, store.agentId)) return this.offer(c);
    const t = store.thread(this.conversationId);
    const typing = store.typingIn(this.conversationId).map((a) => store.nameOf(a, c));
    const range = this.window.slice(t.messages, (m) => m.seq);
    const now = Date.now();
    return html`
      <header>
        <div class="top">
          ${c?.related ? this.relatedTag(c) : html`<span></span>`}
          ${this.muteButton(store)}
        </div>
        ${c?.team_request ? this.requestLine(store, c) : nothing}
        <div class="people" aria-label="Participants">
          ${(c?.participants ?? []).map((p) => {
            const status = p.id === store.agentId ? "online" : (store.presence.get(p.id) ?? "offline");
            return html`<span class="person"><span class="dot ${status}" aria-hidden="true"></span>${p.display_name}${p.id === store.agentId ? " (you)" : ""}<span class="visually-hidden">, ${STATUS_TEXT[status]}</span></span>`;
          })}
        </div>
      </header>
      <div class="history" role="log" aria-label="Messages" aria-live="off" tabindex="0" @scroll=${this.onScroll}>
        ${t.oldestLoaded || t.messages.length === 0 ? nothing
          : html`<button class="older" @click=${() => store.loadOlder(this.conversationId)}>Load older messages</button>`}
        ${t.loading && t.messages.length === 0 ? html`<p class="empty">Loading…</p>` : nothing}
        <div class="spacer above"></div>
        ${repeat(t.messages.slice(range.start, range.end), (m) => m.seq, (m) => this.message(m, c, now))}
        <div class="spacer below"></div>
        ${store.pending(this.conversationId).map((p) => html`
          <div class="msg mine pending"><div class="meta">Sending…</div><div class="bubble">${p.body}</div></div>`)}
        ${this.seen(t.messages, t.readBy, c)}
      </div>
      ${store.failed.has(this.conversationId) ? html`
        <p class="failed" role="alert">Not sent: “${store.failed.get(this.conversationId)!.body}” —
          ${store.failed.get(this.conversationId)!.reason}
          <button @click=${() => { store.failed.delete(this.conversationId); this.requestUpdate(); }}>Dismiss</button></p>` : nothing}
      <p class="visually-hidden" role="status">${this.announcement(t.messages, t.fetched, c)}</p>
      <div class="typing" aria-live="polite">${typing.length ? `${typing.join(", ")} ${typing.length > 1 ? "are" : "is"} typing…` : ""}</div>
      <form class="send" @submit=${this.submit}>
        <label class="visually-hidden" for="say">Message</label>
        <textarea id="say" rows="1" placeholder="Write a message" maxlength="10000" .value=${this.draft}
          @input=${this.onInput} @keydown=${this.onKey}></textarea>
        <button type="submit" class="primary" ?disabled=${!this.draft.trim()}>Send</button>
      </form>`;
  }

  /** Whom a team request waits for, or who took it; the asker may give a taken one back. */
  private requestLine(store: ConsoleStore, c: Conversation) {
    const r = c.team_request!;
    const id = c.id;
    return html`<div class="request">
      <span class="team">${teamNames(r)} request</span>
      <span class="state" role="status">${requestStatus(r, store.agentId)}</span>
      ${r.status === "claimed" && r.asked_by.id === store.agentId ? html`
        <button class="release" title="Give it back to ${teamNames(r)}: offered to its members again"
          @click=${() => store.release(id)}>Release</button>` : nothing}
    </div>`;
  }

  /** A team request offered to this agent: what it is about and Claim, not the history (the
   * server shows that to the one who claims it). */
  private offer(c: Conversation) {
    const store = this.store!;
    const r = c.team_request!;
    const state = offerState(c, store.agentId);
    const status = state === "taken" ? `Taken by ${r.claimed_by?.display_name}`
      : state === "closed" ? "Offered to other members now." : "Offered to you: the first to claim it joins the thread.";
    return html`
      <header>
        <div class="top">${c.related ? this.relatedTag(c) : html`<span></span>`}</div>
      </header>
      <section class="offer" aria-labelledby="offer-title">
        <h3 id="offer-title"><span class="team">${teamNames(r)} request</span> from ${r.asked_by.display_name}</h3>
        ${r.question ? html`<blockquote aria-label="Question">${r.question}</blockquote>` : html`<p class="hint">No question given.</p>`}
        <p class="state" role="status">${this.claimNote || status}</p>
        ${state === "claimable" ? html`
          <button class="primary claim" ?disabled=${this.claiming} @click=${this.claim}>Claim</button>
          <p class="hint">Claiming adds you to the thread: you see its history and answer ${r.asked_by.display_name}.</p>` : nothing}
      </section>`;
  }

  /** Muted: no notification about this thread (the browser's, email, the help desk's webhook). */
  private muteButton(store: ConsoleStore) {
    const muted = store.muted.has(this.conversationId);
    const id = this.conversationId;
    return html`<button class="mute" aria-pressed=${muted ? "true" : "false"}
      title=${muted ? "You get no notification about this thread" : "Notifications about this thread are on"}
      @click=${() => store.setMuted(id, !muted)}>${muted ? "Muted" : "Mute"}</button>`;
  }

  private relatedTag(c: Conversation) {
    const r = c.related!;
    const label = `${r.type === "ticket" ? "Ticket" : "Live chat"} ${r.id}${r.title ? ` · ${r.title}` : ""}`;
    const url = this.store!.relatedUrl(r.type, r.id);
    return html`<div><span class="visually-hidden">Related: </span>${url
      ? html`<a class="related" href=${url} data-related=${`${r.type}:${r.id}`}>Related: ${label}</a>`
      : html`<span class="related" data-related=${`${r.type}:${r.id}`}>Related: ${label}</span>`}</div>`;
  }

  private message(m: Message, c: Conversation | undefined, now: number) {
    const store = this.store!;
    if (m.kind === "system") return html`<div class="row" data-seq=${m.seq}><div class="msg system" data-seq=${m.seq}>${m.body}</div></div>`;
    const mine = m.sender_id === store.agentId;
    const meta = html`<div class="meta">${mine ? "You" : store.nameOf(m.sender_id, c)} · <time datetime=${m.created_at}>${when(m.created_at)}</time>${
      isEdited(m) ? html` · <time class="edited" datetime=${m.edited_at!} title="Edited ${longWhen(m.edited_at!)}">(edited)</time>` : nothing}</div>`;
    if (isDeleted(m)) {
      return html`<div class="row" data-seq=${m.seq}><div class="msg deleted ${mine ? "mine" : ""}" data-seq=${m.seq}>
        ${meta}<div class="tombstone">${tombstoneText(m)}</div></div></div>`;
    }
    const editing = this.editing?.seq === m.seq ? this.editing : null;
    const confirming = this.confirming === m.seq;
    const offered = !editing && !confirming && editable(m, store.agentId, now, store.editWindowMs);
    const error = this.changeError?.seq === m.seq ? this.changeError.text : "";
    return html`
      <div class="row" data-seq=${m.seq}><div class="msg ${mine ? "mine" : ""} ${editing ? "editing" : ""}" data-seq=${m.seq}>
        ${meta}
        ${editing ? this.editor(m, editing) : offered ? html`
          <div class="line">${this.actions(m)}<div class="bubble">${m.body}</div></div>` : html`
          <div class="bubble">${m.body}</div>`}
        ${confirming ? this.confirmation(m) : nothing}
        ${error ? html`<p class="change-error" role="alert">${error}</p>` : nothing}
      </div></div>`;
  }

  /** Edit and Delete beside one of the agent's messages (seen on hover, or when tabbed to). */
  private actions(m: Message) {
    const which = html`<span class="visually-hidden"> your message of ${when(m.created_at)}</span>`;
    return html`<span class="actions">
      <button class="edit" @click=${() => this.startEdit(m)}>Edit${which}</button>
      <button class="delete" @click=${() => this.askDelete(m)}>Delete${which}</button>
    </span>`;
  }

  private editor(m: Message, editing: Editing) {
    const lines = editing.draft.split("\n").length;
    return html`<form class="edit-box" @submit=${(e: Event) => { e.preventDefault(); void this.saveEdit(); }}>
      <label class="visually-hidden" for="edit-${m.seq}">Edit your message</label>
      <textarea id="edit-${m.seq}" class="edit-input" rows=${Math.min(8, Math.max(2, lines))} maxlength="10000"
        .value=${editing.draft} ?readonly=${editing.saving} @keydown=${this.onEditKey}
        @input=${(e: Event) => { if (this.editing) this.editing = { ...this.editing, draft: (e.target as HTMLTextAreaElement).value }; }}
      ></textarea>
      <div class="edit-actions">
        <span class="hint" aria-hidden="true">Enter saves · Esc cancels</span>
        <button type="button" class="cancel" @click=${() => this.closeEdit()}>Cancel</button>
        <button type="submit" class="primary save" ?disabled=${!editing.draft.trim() || editing.saving}>Save</button>
      </div>
    </form>`;
  }

  private confirmation(m: Message) {
    return html`<div class="confirm" role="group" aria-labelledby="confirm-${m.seq}"
      @keydown=${(e: KeyboardEvent) => { if (e.key === "Escape") { e.preventDefault(); e.stopPropagation(); this.cancelDelete(); } }}>
      <span id="confirm-${m.seq}">Delete this message for everyone?</span>
      <button class="danger confirm-delete" ?disabled=${this.deleting} @click=${() => this.confirmDelete(m.seq)}>Delete</button>
      <button class="cancel" @click=${() => this.cancelDelete()}>Cancel</button>
    </div>`;
  }

  /** The message's row, found again after a render (it may have left the DOM meanwhile). */
  private rowOf(seq: number): HTMLElement | null {
    return this.renderRoot.querySelector<HTMLElement>(`.history .msg[data-seq="${seq}"]`);
  }

  private focusAfterRender(seq: number, selector: string): void {
    void this.updateComplete.then(() => (this.rowOf(seq)?.querySelector<HTMLElement>(selector) ?? this.history)?.focus());
  }

  private startEdit(m: Message): void {
    this.confirming = null;
    this.changeError = null;
    this.editing = { seq: m.seq, draft: m.body, saving: false };
    void this.updateComplete.then(() => {
      const box = this.rowOf(m.seq)?.querySelector<HTMLTextAreaElement>("textarea");
      box?.focus();
      box?.setSelectionRange(box.value.length, box.value.length);
    });
  }

  /** Back to the message, the focus on its Edit button (or the history when it has none now). */
  private closeEdit(): void {
    const seq = this.editing?.seq;
    this.editing = null;
    if (seq !== undefined) this.focusAfterRender(seq, "button.edit");
  }

  private onEditKey(e: KeyboardEvent): void {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      void this.saveEdit();
    } else if (e.key === "Escape") {
      e.preventDefault();
      e.stopPropagation();
      this.closeEdit();
    }
  }

  private async saveEdit(): Promise<void> {
    const store = this.store;
    const id = this.conversationId;
    const editing = this.editing;
    if (!store || !editing || editing.saving) return;
    const body = editing.draft.trim();
    if (!body) return;
    const m = store.thread(id).messages.find((x) => x.seq === editing.seq);
    if (m && m.body === body) {
      this.closeEdit(); // nothing changed: nothing to ask
      return;
    }
    this.editing = { ...editing, saving: true };
    this.changeError = null;
    try {
      await store.editMessage(id, editing.seq, body);
      if (id === this.conversationId && this.editing?.seq === editing.seq) this.closeEdit();
    } catch (error) {
      if (id !== this.conversationId) return;
      // The text stays in the box: the agent may copy it, or try again.
      if (this.editing?.seq === editing.seq) this.editing = { ...this.editing, saving: false };
      this.changeError = { seq: editing.seq, text: refusal("edited", error) };
    }
  }

  private askDelete(m: Message): void {
    this.editing = null;
    this.changeError = null;
    this.confirming = m.seq;
    this.focusAfterRender(m.seq, ".confirm button.cancel");
  }

  private cancelDelete(): void {
    const seq = this.confirming;
    this.confirming = null;
    if (seq !== null) this.focusAfterRender(seq, "button.delete");
  }

  private async confirmDelete(seq: number): Promise<void> {
    const store = this.store;
    const id = this.conversationId;
    if (!store || this.deleting) return;
    this.deleting = true;
    try {
      await store.deleteMessage(id, seq);
      if (id !== this.conversationId) return;
      this.confirming = null;
      void this.updateComplete.then(() => this.history?.focus()); // the row has no buttons any more
    } catch (error) {
      if (id !== this.conversationId) return;
      this.confirming = null;
      this.changeError = { seq, text: refusal("deleted", error) };
      this.focusAfterRender(seq, "button.delete");
    } finally {
      this.deleting = false;
    }
  }

  /** Read out the newest message someone else sent since the thread was opened. The history itself
   * is not a live region: rows entering the DOM as the agent scrolls are not news. */
  private announcement(messages: Message[], fetched: boolean, c: Conversation | undefined): string {
    const newest = messages[messages.length - 1];
    if (!fetched || !newest) return "";
    if (this.openedAtSeq === null) this.openedAtSeq = newest.seq;
    if (newest.seq <= this.openedAtSeq || newest.sender_id === this.store!.agentId || newest.kind === "system"
      || isDeleted(newest)) return "";
    return `${this.store!.nameOf(newest.sender_id, c)}: ${newest.body}`;
  }

  /** "Seen by Ben" under the newest of my messages that the others have read. */
  private seen(messages: Message[], readBy: Map<string, number>, c: Conversation | undefined) {
    let last: Message | undefined;
    for (let i = messages.length - 1; i >= 0 && !last; i--) {
      if (messages[i]!.sender_id === this.store!.agentId) last = messages[i];
    }
    if (!last) return nothing;
    const readers = [...readBy.entries()].filter(([, seq]) => seq >= last.seq).map(([a]) => this.store!.nameOf(a, c));
    return readers.length ? html`<div class="seen">Seen by ${readers.join(", ")}</div>` : nothing;
  }
}

/** What to say when the server refused a change: its own words (the edit window's length, ...). */
function refusal(change: "edited" | "deleted", error: unknown): string {
  const why = error instanceof ApiError ? error.message : error instanceof Error ? error.message : String(error);
  return `The message could not be ${change}: ${why}`;
}

/** "27 Nov 2025, 14:05": an edit's time in full, for the "(edited)" mark's title. */
function longWhen(iso: string): string {
  return new Date(iso).toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
}

declare global {
  interface HTMLElementTagNameMap {
    "im-thread": Thread;
  }
}
