/**
 * A `conversation.updated` merged into what the console knows of the thread. The update a
 * message causes carries `participants: null` (unchanged: listing them on every message made a
 * message cost the square of the thread's size), so the known participants stay; a thread first
 * seen through such an update has none yet, and the caller reads them once (`needsParticipants`).
 */
export interface Participant {
  id: string;
  display_name: string;
}

export function mergeConversation<C extends { participants: Participant[] }>(
  known: C | undefined,
  incoming: Omit<C, "participants"> & { participants?: Participant[] | null },
): { conversation: C; needsParticipants: boolean } {
  const participants = incoming.participants ?? known?.participants;
  return {
    conversation: { ...incoming, participants: participants ?? [] } as C,
    needsParticipants: !participants,
  };
}
