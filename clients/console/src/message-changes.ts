/**
 * Edited and deleted messages, without a browser: which version of a message is the current one
 * (a live `message.updated`, an HTTP page read before it, a replay), replacing a message in a
 * thread's history or a thread's preview by seq, and whether the console offers Edit and Delete
 * on a message. The server is the authority on the edit window: the console assumes the default
 * (15 minutes) and narrows its guess when the server refuses an edit as too late.
 */

/** What these functions read of a message (the client's `Message` and the frames' both fit). */
export interface MessageLike {
  seq: number;
  sender_id: string;
  kind: string;
  created_at: string;
  edited_at?: string | null;
  deleted_at?: string | null;
  redacted_at?: string | null;
}

/** The tenant's default edit window; only admins can read the tenant's own (`edit_window_s`). */
export const DEFAULT_EDIT_WINDOW_MS = 15 * 60_000;

export function isDeleted(m: MessageLike): boolean {
  return Boolean(m.deleted_at);
}

/** What a tombstone says: an admin's redaction is told apart from its author's deletion. */
export function tombstoneText(m: MessageLike): string {
  return m.redacted_at ? "Message removed by an admin" : "Message deleted";
}

export function isEdited(m: MessageLike): boolean {
  return Boolean(m.edited_at) && !isDeleted(m);
}

/** A message's versions only move forward: posted, edited (later edits later), deleted, redacted
 * (a deleted message may be redacted later, keeping its `deleted_at`). */
function rank(m: MessageLike): [number, number] {
  if (m.redacted_at) return [3, Date.parse(m.redacted_at) || 0];
  if (m.deleted_at) return [2, Date.parse(m.deleted_at) || 0];
  if (m.edited_at) return [1, Date.parse(m.edited_at) || 0];
  return [0, 0];
}

/** The current of two versions of one message: `incoming` unless `known` is later (an HTTP page
 * read before an edit must not undo the live `message.updated` that followed it). */
export function newer<M extends MessageLike>(known: M | undefined, incoming: M): M {
  if (!known) return incoming;
  const [a, at] = rank(known);
  const [b, bt] = rank(incoming);
  return a > b || (a === b && at > bt) ? known : incoming;
}

/**
 * `messages` (ascending by seq) with `incoming` merged in by seq, each one the current version of
 * itself (`revised`: the changes seen live, which win over an older copy read meanwhile). Returns
 * a new array, sorted.
 */
export function mergeBySeq<M extends MessageLike>(messages: readonly M[], incoming: readonly M[],
  revised?: ReadonlyMap<number, M>): M[] {
  const bySeq = new Map(messages.map((m) => [m.seq, m]));
  for (const m of incoming) {
    const current = newer(bySeq.get(m.seq), m);
    const seen = revised?.get(m.seq);
    bySeq.set(m.seq, seen ? newer(current, seen) : current);
  }
  return [...bySeq.values()].sort((a, b) => a.seq - b.seq);
}

/**
 * A `message.updated` applied to a history: the message of that seq replaced when it is there and
 * older. A message not loaded is not added (it would leave a gap that paging back relies on not to
 * exist): the page that loads it later brings it as it is. The same array when nothing changed.
 */
export function replaceBySeq<M extends MessageLike>(messages: M[], incoming: M): M[] {
  let lo = 0;
  let hi = messages.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (messages[mid]!.seq < incoming.seq) lo = mid + 1;
    else hi = mid;
  }
  const known = messages[lo];
  if (!known || known.seq !== incoming.seq || newer(known, incoming) === known) return messages;
  const next = messages.slice();
  next[lo] = incoming;
  return next;
}

/** A thread whose preview is that message shows it as it is now; other threads are returned as they are. */
export function withPreview<C extends { last_message?: M | null }, M extends MessageLike & { conversation_id: string }>(
  conversation: C, incoming: M): C {
  const last = conversation.last_message;
  if (!last || last.seq !== incoming.seq || last.conversation_id !== incoming.conversation_id) return conversation;
  const current = newer(last, incoming);
  return current === last ? conversation : { ...conversation, last_message: current };
}

/** Whether the console offers Edit and Delete on `m`: the agent's own text message, not deleted,
 * posted less than `windowMs` ago as far as this browser's clock can tell. */
export function editable(m: MessageLike, agentId: string, now: number, windowMs: number): boolean {
  if (m.kind !== "text" || m.sender_id !== agentId || isDeleted(m)) return false;
  const posted = Date.parse(m.created_at);
  return Number.isFinite(posted) && now - posted < windowMs;
}

/**
 * When the next of the agent's editable messages stops being editable (ms since the epoch), so
 * its buttons can go then; null when none is editable. Walks back from the newest message and
 * stops at the first one older than the window (a history is in posting order).
 */
export function nextExpiry(messages: readonly MessageLike[], agentId: string, now: number, windowMs: number): number | null {
  let next: number | null = null;
  for (let i = messages.length - 1; i >= 0; i--) {
    const m = messages[i]!;
    const until = Date.parse(m.created_at) + windowMs;
    if (!(until > now)) break;
    if (editable(m, agentId, now, windowMs)) next = next === null ? until : Math.min(next, until);
  }
  return next;
}

/**
 * The window the console assumes after the server refused a change of `m` as too late
 * (`edit_window_passed`) at `now`: shorter than that message's age, so no older message is offered
 * either. Unchanged when the refusal says nothing new.
 */
export function narrowWindow(windowMs: number, m: MessageLike, now: number): number {
  const age = now - Date.parse(m.created_at);
  return Number.isFinite(age) ? Math.max(0, Math.min(windowMs, age)) : windowMs;
}
