/**
 * The console's state, shared by every component on the page: the thread list (with the team
 * requests offered to this agent), each thread's loaded messages, presence, typing, read markers
 * and the unread total, kept current by the delivery stream. Components read it and re-render on
 * `change`; all I/O goes through the client library (clients/js), which owns the protocol.
 */

import {
  ApiError,
  type ListedAgent,
  type Conversation,
  type ConversationPage,
  HelpdeskIm,
  type HelpdeskImOptions,
  type LiveFrame,
  type Message,
  type PendingSend,
  type PresenceStatus,
  type QueuedFrame,
  type Team,
} from "@helpdesk-im/client";
import { mergeConversation } from "./merge.js";
import { DEFAULT_EDIT_WINDOW_MS, isDeleted, mergeBySeq, narrowWindow, newer, replaceBySeq, withPreview } from "./message-changes.js";
import { applyRequest, offerState, type Person, takenBy } from "./team-requests.js";

export interface ConsoleConfig extends HelpdeskImOptions {
  /** The signed-in agent's id (the token's `sub`). */
  agentId: string;
  /** Where a Related tag links: `{type}` and `{id}` are replaced, e.g. `/desk/{type}s/{id}`. */
  relatedUrlTemplate?: string;
}

/** How a press of Claim ended: the thread is the agent's now, someone else was faster (named), or
 * the request is no longer offered to the agent at all. */
export type ClaimOutcome = { claimed: true } | { takenBy: string } | { gone: true };

/** What to tell the agent when a claim did not make the thread theirs ("" when it did). */
export function claimNotice(outcome: ClaimOutcome): string {
  if ("takenBy" in outcome) return `${outcome.takenBy} already took this request.`;
  return "gone" in outcome ? "This request is no longer offered to you." : "";
}

/** Whom "New Instant Message" or Assistance asks: agents by name and/or teams, with the question a
 * team's members decide on before one of them takes it. */
export interface Recipients {
  agentIds: string[];
  teamIds: string[];
  question?: string;
}

export interface ThreadState {
  messages: Message[]; // ascending by seq (live ones may arrive before the first page is read)
  fetched: boolean; // the newest page was read over HTTP
  oldestLoaded: boolean; // the first message of the thread is loaded
  loading: boolean;
  readBy: Map<string, number>; // other participants' read markers (seq)
  revised: Map<number, Message>; // the edits and deletions seen live: a page read before one cannot undo it
}

const TYPING_SHOWN_MS = 5_000;
/** A message older than this when it arrives (a reconnect's replay) makes no browser notification. */
const NOTIFY_WITHIN_MS = 5 * 60_000;

export class ConsoleStore extends EventTarget {
  readonly im: HelpdeskIm;
  readonly agentId: string;
  readonly relatedUrlTemplate: string;
  conversations = new Map<string, Conversation>();
  threads = new Map<string, ThreadState>();
  presence = new Map<string, PresenceStatus>();
  typing = new Map<string, Map<string, number>>(); // conversation → agent → until (ms)
  unreadTotal = 0;
  loaded = false;
  streamState = "idle";
  error: string | null = null;
  private typingTimer: ReturnType<typeof setTimeout> | null = null;
  private readonly marking = new Set<string>();
  private readonly marked = new Map<string, number>(); // conversation → the last seq we asked to mark
  /** The agent's notification choices (the notifier honours them too): read at start. */
  doNotDisturb = false;
  muted = new Set<string>();
  /** The tenant lets notifications show message text (else only who wrote and where). */
  messagePreviews = false;
  /** Whether the browser lets the console show notifications ("unsupported": no Notification API). */
  notificationPermission: NotificationPermission | "unsupported" =
    typeof Notification === "undefined" ? "unsupported" : Notification.permission;
  /** Sends the server refused, per thread: shown with their text so nothing vanishes silently. */
  failed = new Map<string, { body: string; reason: string }>();
  /** How long after posting the console offers Edit and Delete: the tenant's default, narrowed when
   * the server refuses a change as too late (only admins can read the tenant's setting). */
  editWindowMs = DEFAULT_EDIT_WINDOW_MS;
  private changeQueued = false;
  private sorted: Conversation[] | null = null;

  constructor(config: ConsoleConfig) {
    super();
    this.agentId = config.agentId;
    this.relatedUrlTemplate = config.relatedUrlTemplate ?? "";
    this.im = new HelpdeskIm(config);
    this.im.stream.on("frame", (frame) => this.onFrame(frame));
    this.im.stream.on("reload", (page) => void this.reload(page));
    this.im.stream.on("state", (state) => {
      this.streamState = state;
      this.changed();
    });
  }

  /** Loads the thread list, then follows the stream from the list's cursor. */
  async start(): Promise<void> {
    try {
      const page = await this.im.http.conversations({ limit: 100 });
      try {
        await this.loadList(page);
      } catch (error) {
        // The newest threads are shown and live updates still start: say what is missing.
        this.error = `Older threads could not be loaded (${error instanceof Error ? error.message : String(error)}): `
          + "reload the page to try again.";
      }
      // Presence of everyone this agent may see: changes then arrive live (presence.changed).
      await this.agents("").catch(() => undefined);
      await this.loadNotificationPreferences();
      void this.watchNotificationPermission();
      document.addEventListener("visibilitychange", this.onVisibility);
      this.im.stream.start(page.stream_cursor);
      for (const sent of this.im.sends.resume()) void sent.then((m) => this.addMessages(m.conversation_id, [m]), () => undefined);
    } catch (error) {
      this.error = error instanceof Error ? error.message : String(error);
    }
    this.changed();
  }

  /** After a 4409 (the stream's cursor is gone): the whole list again, and every thread read so far
   * is read again from the server (the stream already resumes after the page's cursor). */
  private async reload(page: ConversationPage): Promise<void> {
    try {
      this.conversations.clear();
      await this.loadList(page);
      for (const [id, t] of this.threads) {
        if (!t.fetched) continue;
        t.fetched = false;
        t.messages = [];
        await this.open(id);
      }
    } catch (error) {
      this.error = error instanceof Error ? error.message : String(error);
    }
    this.changed();
  }

  /** The list, most recent first: shown as soon as its first page is read (an agent with a
   * thousand threads sees the newest ones at once), then completed page by page. The stream starts
   * after the last page from the first page's cursor, so every change since is replayed over it. */
  private async loadList(first: ConversationPage): Promise<void> {
    for (const c of first.items) this.conversations.set(c.id, c);
    this.recountUnread();
    this.loaded = true;
    this.changed();
    let cursor = first.next_cursor;
    while (cursor) {
      const more = await this.im.http.conversations({ limit: 100, cursor });
      for (const c of more.items) this.conversations.set(c.id, c);
      cursor = more.next_cursor;
      this.recountUnread();
      this.changed();
    }
  }

  close(): void {
    document.removeEventListener("visibilitychange", this.onVisibility);
    this.im.close();
  }

  // --- reads for the components ---------------------------------------------------------------

  /** Most recent first (the order of the thread list); sorted again only after a change, not on
   * every render of a scrolling list. */
  sortedConversations(): Conversation[] {
    this.sorted ??= [...this.conversations.values()].sort((a, b) =>
      (b.last_message_at ?? b.created_at).localeCompare(a.last_message_at ?? a.created_at) || b.id.localeCompare(a.id));
    return this.sorted;
  }

  thread(id: string): ThreadState {
    let t = this.threads.get(id);
    if (!t) {
      t = { messages: [], fetched: false, oldestLoaded: false, loading: false, readBy: new Map(), revised: new Map() };
      this.threads.set(id, t);
    }
    return t;
  }

  typingIn(conversationId: string): string[] {
    const now = Date.now();
    return [...(this.typing.get(conversationId) ?? new Map()).entries()]
      .filter(([agent, until]) => until > now && agent !== this.agentId)
      .map(([agent]) => agent);
  }

  pending(conversationId: string): PendingSend[] {
    return this.im.sends.pending(conversationId);
  }

  relatedUrl(type: string, id: string): string | null {
    if (!this.relatedUrlTemplate) return null;
    return this.relatedUrlTemplate.replaceAll("{type}", encodeURIComponent(type)).replaceAll("{id}", encodeURIComponent(id));
  }

  nameOf(agentId: string, conversation?: Conversation): string {
    const p = conversation?.participants.find((x) => x.id === agentId);
    if (p) return p.display_name;
    for (const c of this.conversations.values()) {
      const q = c.participants.find((x) => x.id === agentId);
      if (q) return q.display_name;
    }
    return agentId;
  }

  // --- actions ---------------------------------------------------------------------------------

  /** The newest page of a thread's messages (then older ones with `loadOlder`). */
  async open(conversationId: string): Promise<void> {
    const t = this.thread(conversationId);
    if (!this.conversations.has(conversationId)) {
      this.conversations.set(conversationId, await this.im.http.conversation(conversationId));
      this.changed();
    }
    // An offer's history is the claimer's to read: the server answers 404 until then.
    if (this.isOffer(conversationId)) return;
    if (!t.fetched && !t.loading) {
      t.loading = true;
      this.changed();
      try {
        const page = await this.im.http.messages(conversationId, { limit: 50 });
        this.addMessages(conversationId, page.items);
        t.fetched = true;
        t.oldestLoaded = page.items.length === 0 || page.items[0]!.seq === 1;
      } finally {
        t.loading = false;
        this.changed();
      }
    }
  }

  async loadOlder(conversationId: string): Promise<void> {
    const t = this.thread(conversationId);
    if (t.loading || t.oldestLoaded || t.messages.length === 0) return;
    t.loading = true;
    this.changed();
    try {
      const page = await this.im.http.messages(conversationId, { before_seq: t.messages[0]!.seq, limit: 50 });
      this.addMessages(conversationId, page.items);
      t.oldestLoaded = page.items.length === 0 || page.items[0]!.seq === 1;
    } finally {
      t.loading = false;
      this.changed();
    }
  }

  async send(conversationId: string, body: string): Promise<void> {
    const sending = this.im.sends.send(conversationId, body);
    this.changed(); // shows it as pending at once
    try {
      this.addMessages(conversationId, [await sending]);
      this.failed.delete(conversationId);
    } catch (error) {
      this.failed.set(conversationId, { body, reason: error instanceof Error ? error.message : String(error) });
      this.changed();
      throw error;
    }
  }

  /** Replaces the body of one of the agent's messages. The server may refuse (the window passed, the
   * message was deleted meanwhile): the ApiError is thrown for the caller to show; a refusal as too
   * late also stops the console offering changes to messages as old. */
  async editMessage(conversationId: string, seq: number, body: string): Promise<Message> {
    return this.change(conversationId, seq, () => this.im.http.editMessage(conversationId, seq, body));
  }

  /** Deletes one of the agent's messages for everyone: it becomes a "Message deleted" line. */
  async deleteMessage(conversationId: string, seq: number): Promise<Message> {
    return this.change(conversationId, seq, () => this.im.http.deleteMessage(conversationId, seq));
  }

  private async change(conversationId: string, seq: number, call: () => Promise<Message>): Promise<Message> {
    try {
      const m = await call();
      this.applyChange(m); // at once: the stream's message.updated brings the same (or a later) version
      return m;
    } catch (error) {
      const m = this.thread(conversationId).messages.find((x) => x.seq === seq);
      if (m && error instanceof ApiError && error.code === "edit_window_passed") {
        this.editWindowMs = narrowWindow(this.editWindowMs, m, Date.now());
        this.changed();
      }
      throw error;
    }
  }

  /** Marks the thread read up to its newest message (the read marker only moves forward). Once
   * per new message: a reply that still counts unread messages (our list is behind the server)
   * moves our last_seq up instead of asking again. */
  async markRead(conversationId: string): Promise<void> {
    const c = this.conversations.get(conversationId);
    if (!c || c.unread_count === 0 || this.marking.has(conversationId) || this.isOffer(conversationId)) return;
    if ((this.marked.get(conversationId) ?? 0) >= c.last_seq) return;
    this.marking.add(conversationId);
    this.marked.set(conversationId, c.last_seq);
    try {
      const marker = await this.im.http.markRead(conversationId, c.last_seq);
      const now = this.conversations.get(conversationId);
      if (now) {
        const lastSeq = Math.max(now.last_seq, marker.last_read_seq + marker.unread_count);
        this.conversations.set(conversationId, { ...now, last_seq: lastSeq, last_read_seq: marker.last_read_seq,
          unread_count: Math.max(0, lastSeq - marker.last_read_seq) });
      }
    } finally {
      this.marking.delete(conversationId);
    }
    this.recountUnread();
    this.changed();
  }

  /** A new thread with agents (`string[]`, as before teams) or with agents and teams. A question
   * for the teams goes as the first message: it is what their members see before they claim. */
  async startConversation(to: string[] | Recipients, related?: { type: "ticket" | "chat"; id: string; title?: string }): Promise<Conversation> {
    const { agentIds, teamIds, question } = Array.isArray(to) ? { agentIds: to, teamIds: [], question: undefined } : to;
    const c = await this.im.http.startConversation({
      participant_ids: agentIds,
      ...(teamIds.length ? { team_ids: teamIds } : {}),
      related: related ?? null,
      ...(question?.trim() ? { first_message: { body: question.trim(), client_msg_id: globalThis.crypto.randomUUID() } } : {}),
    });
    this.conversations.set(c.id, c);
    this.recountUnread();
    this.changed();
    return c;
  }

  /** The team request is offered to this agent, who does not take part in the thread (yet). */
  isOffer(conversationId: string): boolean {
    const c = this.conversations.get(conversationId);
    return Boolean(c && offerState(c, this.agentId));
  }

  /** Takes an offered team request: on success the thread is this agent's, its history loading. */
  async claim(conversationId: string): Promise<ClaimOutcome> {
    try {
      const c = await this.im.http.claim(conversationId);
      const known = this.conversations.get(conversationId);
      this.conversations.set(conversationId, mergeConversation(known, c).conversation);
      this.recountUnread();
      this.changed();
      void this.open(conversationId).catch(() => undefined);
      return { claimed: true };
    } catch (error) {
      if (!(error instanceof ApiError) || (error.status !== 409 && error.status !== 404)) {
        this.error = `The request could not be claimed: ${error instanceof Error ? error.message : String(error)}`;
        this.changed();
        throw error;
      }
      const c = this.conversations.get(conversationId);
      const winner = error.details?.claimed_by as Person | undefined;
      if (error.status === 409 && winner && c) {
        this.conversations.set(conversationId, takenBy(c, winner));
        this.changed();
        return { takenBy: winner.display_name };
      }
      // No longer offered to this agent (handed back to others, or gone): out of the list.
      this.conversations.delete(conversationId);
      this.changed();
      return { gone: true };
    }
  }

  /** Gives a taken team request back to its teams (the asker's choice): offered again. */
  async release(conversationId: string): Promise<void> {
    try {
      const c = await this.im.http.release(conversationId);
      this.conversations.set(conversationId, mergeConversation(this.conversations.get(conversationId), c).conversation);
    } catch (error) {
      this.error = `The request could not be released: ${error instanceof Error ? error.message : String(error)}`;
    }
    this.changed();
  }

  /** The teams the picker offers (name prefix `q`), by name. */
  async teams(q: string): Promise<Team[]> {
    return (await this.im.http.teams(q || undefined)).items;
  }

  /** The participants of a thread first seen through a message's update (which omits them). */
  private async loadParticipants(id: string): Promise<void> {
    try {
      const fetched = await this.im.http.conversation(id);
      const now = this.conversations.get(id);
      if (now && now.participants.length === 0) {
        this.conversations.set(id, { ...now, participants: fetched.participants });
        this.changed();
      }
    } catch {
      // The next update that lists them (or a reload) fills them in.
    }
  }

  async agents(q: string): Promise<ListedAgent[]> {
    // A page may end early when the server's per-request read budget runs out (a large tenant):
    // follow the cursor a few times so the picker still shows a screenful.
    const items: ListedAgent[] = [];
    let cursor: string | undefined;
    for (let round = 0; round < 5 && items.length < 100; round++) {
      const page = await this.im.http.agents({ q: q || undefined, limit: 100 - items.length, cursor });
      items.push(...page.items);
      if (!page.next_cursor) break;
      cursor = page.next_cursor;
    }
    for (const a of items) this.presence.set(a.id, a.presence.status as PresenceStatus);
    return items.filter((a) => a.id !== this.agentId);
  }

  // --- notifications -----------------------------------------------------------------------------

  /** Follows the browser's notification permission (the agent may change it in the site settings). */
  private async watchNotificationPermission(): Promise<void> {
    try {
      const status = await navigator.permissions.query({ name: "notifications" });
      const update = () => {
        this.notificationPermission = typeof Notification === "undefined" ? "unsupported" : Notification.permission;
        this.changed();
      };
      status.addEventListener("change", update);
      update();
    } catch {
      // No Permissions API here: what Notification.permission said at start stands.
    }
  }

  private async loadNotificationPreferences(): Promise<void> {
    try {
      const prefs = await this.im.http.notificationPreferences();
      this.doNotDisturb = prefs.do_not_disturb;
      this.muted = new Set(prefs.muted_conversation_ids);
      this.messagePreviews = prefs.message_previews;
    } catch {
      // Shown as "not muted" until the next load; the notifier reads the server's copy anyway.
    }
  }

  async setMuted(conversationId: string, muted: boolean): Promise<void> {
    try {
      if (muted) await this.im.http.mute(conversationId);
      else await this.im.http.unmute(conversationId);
      if (muted) this.muted.add(conversationId);
      else this.muted.delete(conversationId);
    } catch (error) {
      this.error = `The thread could not be ${muted ? "muted" : "unmuted"}: ${error instanceof Error ? error.message : String(error)}`;
    }
    this.changed();
  }

  async setDoNotDisturb(on: boolean): Promise<void> {
    try {
      this.doNotDisturb = (await this.im.http.setDoNotDisturb(on)).do_not_disturb;
    } catch (error) {
      this.error = `Do not disturb could not be changed: ${error instanceof Error ? error.message : String(error)}`;
    }
    this.changed();
  }

  /** The tab goes to the background: the choices made on another device apply from now. */
  private readonly onVisibility = () => {
    if (document.visibilityState === "hidden") void this.loadNotificationPreferences().then(() => this.changed());
  };

  /** Asks the browser (from a click: browsers allow the question only then). */
  async enableBrowserNotifications(): Promise<void> {
    if (typeof Notification === "undefined") return;
    this.notificationPermission = await Notification.requestPermission();
    this.changed();
  }

  /** A browser notification for a message that arrived while the console's tab is in the
   * background — not one's own, not in a muted thread, not during do-not-disturb, not one already
   * read, and not an old one a reconnect replays. Clicking it brings the tab and the thread. */
  private notifyInBackground(m: Message): void {
    if (m.sender_id === this.agentId || m.kind !== "text" || isDeleted(m) || document.visibilityState !== "hidden") return;
    if (typeof Notification === "undefined" || Notification.permission !== "granted") return;
    if (this.doNotDisturb || this.muted.has(m.conversation_id)) return;
    const c = this.conversations.get(m.conversation_id);
    if ((c && m.seq <= c.last_read_seq) || Date.now() - Date.parse(m.created_at) > NOTIFY_WITHIN_MS) return;
    const about = c?.related ? ` · ${c.related.type === "ticket" ? "Ticket" : "Chat"} ${c.related.id}` : "";
    const text = this.messagePreviews ? m.body : "New message";
    const shown = new Notification(`${this.nameOf(m.sender_id, c)}${about}`, {
      body: text.length > 140 ? `${text.slice(0, 139)}…` : text,
      tag: m.conversation_id, // a newer message of the thread replaces the older notification
    });
    shown.onclick = () => {
      window.focus();
      this.dispatchEvent(new CustomEvent<string>("open-thread", { detail: m.conversation_id }));
      shown.close();
    };
  }

  typingNow(conversationId: string): void {
    this.im.stream.typing(conversationId);
  }

  // --- the stream ------------------------------------------------------------------------------

  private onFrame(frame: QueuedFrame | LiveFrame): void {
    switch (frame.type) {
      case "message.created": {
        const fresh = !this.thread(frame.message.conversation_id).messages.some((m) => m.seq === frame.message.seq);
        this.addMessages(frame.message.conversation_id, [frame.message]);
        if (fresh) this.notifyInBackground(frame.message);
        this.clearTyping(frame.message.conversation_id, frame.message.sender_id);
        break;
      }
      case "message.updated":
        this.applyChange(frame.message);
        break;
      case "conversation.updated": {
        const id = frame.conversation.id;
        const { conversation, needsParticipants } = mergeConversation(
          this.conversations.get(id), frame.conversation as Conversation);
        // An edit or deletion already seen (our own answer, a message.updated) outranks an older preview.
        const last = conversation.last_message;
        const seen = last ? this.threads.get(id)?.revised.get(last.seq) : undefined;
        this.conversations.set(id, seen ? withPreview(conversation, seen) : conversation);
        if (needsParticipants) void this.loadParticipants(id);
        this.recountUnread();
        break;
      }
      case "read.updated":
        if (frame.agent_id === this.agentId) {
          const c = this.conversations.get(frame.conversation_id);
          if (c && frame.seq > c.last_read_seq) {
            this.conversations.set(c.id, { ...c, last_read_seq: frame.seq, unread_count: Math.max(0, c.last_seq - frame.seq) });
            this.recountUnread();
          }
        } else {
          const t = this.thread(frame.conversation_id);
          t.readBy.set(frame.agent_id, Math.max(t.readBy.get(frame.agent_id) ?? 0, frame.seq));
        }
        break;
      case "team_request.offered":
      case "team_request.claimed":
      case "team_request.released": {
        const id = frame.request.conversation_id;
        const next = applyRequest(this.conversations.get(id), frame.request, this.agentId);
        if (next) this.conversations.set(id, next);
        this.recountUnread();
        break;
      }
      case "presence.changed":
        this.presence.set(frame.agent_id, frame.status);
        break;
      case "typing": {
        const byAgent = this.typing.get(frame.conversation_id) ?? new Map<string, number>();
        byAgent.set(frame.agent_id, Date.now() + TYPING_SHOWN_MS);
        this.typing.set(frame.conversation_id, byAgent);
        this.scheduleTypingExpiry();
        break;
      }
    }
    this.changed();
  }

  private addMessages(conversationId: string, messages: Message[]): void {
    if (!messages.length) return;
    const t = this.thread(conversationId);
    t.messages = mergeBySeq(t.messages, messages, t.revised);
    this.changed();
  }

  /** A message edited or deleted (here, or live from `message.updated`): the one of that seq in the
   * thread's history, and the thread's preview when it is its last message, become this version. */
  private applyChange(m: Message): void {
    const t = this.thread(m.conversation_id);
    const current = newer(t.revised.get(m.seq), m);
    t.revised.set(m.seq, current);
    t.messages = replaceBySeq(t.messages, current);
    const c = this.conversations.get(m.conversation_id);
    if (c) this.conversations.set(c.id, withPreview(c, current));
    this.changed();
  }

  private clearTyping(conversationId: string, agentId: string): void {
    this.typing.get(conversationId)?.delete(agentId);
  }

  /** One timer for every typing indicator, only while one is shown: an idle console uses no CPU. */
  private scheduleTypingExpiry(): void {
    if (this.typingTimer) return;
    this.typingTimer = setTimeout(() => {
      this.typingTimer = null;
      const now = Date.now();
      let left = false;
      for (const byAgent of this.typing.values()) {
        for (const [agent, until] of byAgent) {
          if (until <= now) byAgent.delete(agent);
          else left = true;
        }
      }
      this.changed();
      if (left) this.scheduleTypingExpiry();
    }, 1_000);
  }

  private recountUnread(): void {
    let total = 0;
    for (const c of this.conversations.values()) if (!offerState(c, this.agentId)) total += c.unread_count;
    this.unreadTotal = total;
  }

  /** Coalesced: many frames in one batch make one render. */
  private changed(): void {
    this.sorted = null; // every change to the list goes through here
    if (this.changeQueued) return;
    this.changeQueued = true;
    queueMicrotask(() => {
      this.changeQueued = false;
      this.dispatchEvent(new Event("change"));
    });
  }
}

let current: ConsoleStore | null = null;
const waiting = new Set<(store: ConsoleStore) => void>();

/** Called once by the host page: signs the console in and loads it. */
export function configure(config: ConsoleConfig): ConsoleStore {
  current?.close();
  current = new ConsoleStore(config);
  void current.start();
  for (const resolve of waiting) resolve(current);
  waiting.clear();
  return current;
}

/** The page's store, once the host page has configured it. */
export function whenConfigured(): Promise<ConsoleStore> {
  if (current) return Promise.resolve(current);
  return new Promise((resolve) => waiting.add(resolve));
}

export function store(): ConsoleStore | null {
  return current;
}
