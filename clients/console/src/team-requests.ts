/**
 * Team requests as the console shows them, pure: whether a thread is an offer to this agent (to
 * claim, or already taken by someone else), how a `team_request.*` frame or a lost claim changes
 * the known thread, and the words for its status. The store does the I/O; components render.
 */

export interface Person {
  id: string;
  display_name: string;
}

/** The fields of a TeamRequest (HTTP and stream frames share its shape) that the console reads. */
export interface RequestLike {
  conversation_id: string;
  teams: { id: string; name: string }[];
  asked_by: Person;
  related: { type: "ticket" | "chat"; id: string; title?: string | null } | null;
  question: string | null;
  status: "open" | "claimed";
  offered_to: string[];
  claimed_by: Person | null;
  opened_at: string;
}

export interface ThreadLike {
  id: string;
  participants: Person[];
  team_request?: RequestLike | null;
}

/**
 * What a thread is to `me` in the list: null for a thread `me` takes part in (team request or
 * not); else an offer — "claimable" while it is open to `me`, "taken" once someone else claimed it
 * (shown, greyed, so the agent sees where it went), "closed" when it is open again but no longer
 * to `me` (`me` held it and it was handed back).
 */
export type OfferState = "claimable" | "taken" | "closed";

export function offerState(c: ThreadLike, me: string): OfferState | null {
  const r = c.team_request;
  if (!r || c.participants.some((p) => p.id === me)) return null;
  if (r.status === "claimed") return r.claimed_by?.id === me ? null : "taken";
  return r.offered_to.includes(me) ? "claimable" : "closed";
}

/**
 * A `team_request.*` frame applied to what the console knows of its thread: the known thread with
 * the new request; a thread first heard of through an offer to `me` (an escalation, a release, an
 * offer while the list was loading) made from the request alone, since `me` may not read it yet;
 * undefined when there is nothing to show (a team member told of a claim on a request never
 * offered to them).
 */
export function applyRequest<C extends ThreadLike>(known: C | undefined, request: RequestLike, me: string): C | undefined {
  if (known) return { ...known, team_request: request };
  if (request.status !== "open" || !request.offered_to.includes(me)) return undefined;
  return offerThread(request) as unknown as C;
}

/** The list entry of an offer known only from its request (the asker is its one known participant). */
export function offerThread(r: RequestLike) {
  return {
    id: r.conversation_id,
    participants: [r.asked_by],
    related: r.related,
    created_by: r.asked_by.id,
    created_at: r.opened_at,
    last_seq: 0,
    last_read_seq: 0,
    last_message: null,
    last_message_at: r.opened_at,
    unread_count: 0,
    team_request: r,
  };
}

/** A claim refused with 409 `already_claimed`: the thread as the winner left it, until the
 * stream's `team_request.claimed` says the same. */
export function takenBy<C extends ThreadLike>(c: C, winner: Person): C {
  if (!c.team_request) return c;
  return { ...c, team_request: { ...c.team_request, status: "claimed", claimed_by: winner, offered_to: [] } };
}

/** "Tier 2", "Tier 2 and Billing", "Tier 2, Billing and Sales". */
export function teamNames(r: Pick<RequestLike, "teams">): string {
  const names = r.teams.map((t) => t.name);
  return names.length <= 1 ? (names[0] ?? "") : `${names.slice(0, -1).join(", ")} and ${names[names.length - 1]}`;
}

/** The status line of a team request in its thread: who has it, or whom it waits for. */
export function requestStatus(r: RequestLike, me: string): string {
  if (r.status === "claimed" && r.claimed_by) return `Taken by ${r.claimed_by.id === me ? "you" : r.claimed_by.display_name}`;
  return `Waiting for ${teamNames(r)}`;
}

/** Who a thread is with, as its list row names it: the other participants, and the teams while
 * nobody of them took it yet. */
export function threadTitle(c: ThreadLike, me: string): string {
  const names = c.participants.filter((p) => p.id !== me).map((p) => p.display_name);
  const r = c.team_request;
  if (r && r.status === "open") names.push(teamNames(r));
  return names.join(", ") || "Only you";
}
