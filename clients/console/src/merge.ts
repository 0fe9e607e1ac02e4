/**
 * A `conversation.updated` merged into what the console knows of the thread. The update a
 * message causes carries `participants: null` (unchanged: listing them on every message made a
 * message cost the square of the thread's size), so the known participants stay; a thread first
 * seen through such an update has none yet, and the caller reads them once (`needsParticipants`).
 * The frame's thread has no `team_request` at all: the known one stays (the `team_request.*`
 * frames move it).
 */
export interface Participant {
  id: string;
  display_name: string;
}

export function mergeConversation<C extends { participants: Participant[]; team_request?: unknown }>(
  known: C | undefined,
  incoming: Omit<C, "participants" | "team_request"> & { participants?: Participant[] | null; team_request?: unknown },
): { conversation: C; needsParticipants: boolean } {
  const participants = incoming.participants ?? known?.participants;
  const request = "team_request" in incoming ? {} : known && "team_request" in known ? { team_request: known.team_request } : {};
  return {
    conversation: { ...incoming, ...request, participants: participants ?? [] } as unknown as C,
    needsParticipants: !participants,
  };
}
