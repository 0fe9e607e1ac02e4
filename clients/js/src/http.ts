/** im-api over HTTP: the bearer token from the host page, refreshed once on a 401; typed answers. */

import type { components } from "./generated/api.js";

type Schemas = components["schemas"];
/** An agent as an admin sees it (PUT's answer: with email and the active flag). */
export type Agent = Schemas["Agent"];
/** An agent as every agent sees it in the picker (`GET /v1/agents`). */
export type ListedAgent = Schemas["ListedAgent"];
export type AgentPage = Schemas["AgentPage"];
export type Conversation = Schemas["Conversation"];
export type ConversationPage = Schemas["ConversationPage"];
export type ConversationStart = Schemas["ConversationStart"];
export type Message = Schemas["Message"];
export type MessagePage = Schemas["MessagePage"];
/** `PATCH …/messages/{seq}`'s body: the new text (1 to 10,000 characters after trimming). */
export type MessageEdit = Schemas["MessageEdit"];
/** The tenant's message settings (`GET /v1/admin/message-settings`, admins): how long authors may
 * edit or delete their messages (`edit_window_s`, 0: never). */
export type MessageSettings = Schemas["MessageSettings"];
export type ReadMarker = Schemas["ReadMarker"];
/** A team an agent can ask instead of (or besides) named agents: `GET /v1/teams`. */
export type Team = Schemas["Team"];
export type TeamPage = Schemas["TeamPage"];
export type TeamMember = Schemas["TeamMember"];
/** A thread asked of teams: offered to their members until one claims it (`Conversation.team_request`). */
export type TeamRequest = Schemas["TeamRequest"];
export type RelatedItem = Schemas["RelatedItem"];
export type Ticket = Schemas["Ticket"];
export type Unread = Schemas["Unread"];
/** The caller's do-not-disturb switch and muted threads (what the notifier honours). */
export type NotificationPreferences = Schemas["NotificationPreferences"];
export type PresenceStatus = "online" | "away" | "offline";

/**
 * Asked for a token whenever the client needs one: `refresh` is true after the server refused the
 * last one (401, or a stream closed 4401). The library keeps it in memory only: never in a URL,
 * never in storage.
 */
export type GetToken = (context: { refresh: boolean }) => Promise<string> | string;

/** An answer of im-api that is not a success: the server's error body, as API.md defines it. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly field?: string,
    readonly requestId?: string,
    /** Seconds the server asked to wait (429, 503). */
    readonly retryAfterS?: number,
    /** Machine-readable facts some errors carry, e.g. `claimed_by` on 409 `already_claimed`. */
    readonly details?: Record<string, unknown>,
  ) {
    super(message);
    this.name = "ApiError";
  }

  /** Worth trying again later with the same request: the server is busy or away, not refusing it. */
  get transient(): boolean {
    return this.status === 408 || this.status === 429 || this.status >= 500;
  }
}

/** The request never got an answer (connection refused, reset, DNS, offline). */
export class NetworkError extends Error {
  constructor(override readonly cause: unknown) {
    super(`network error: ${cause instanceof Error ? cause.message : String(cause)}`);
    this.name = "NetworkError";
  }
}

export interface HttpOptions {
  /** im-api's base URL, e.g. `https://helpdesk.example/im` (no trailing slash needed). */
  baseUrl: string;
  getToken: GetToken;
  fetch?: typeof fetch;
  /** A call with no answer after this long fails as a NetworkError (ms). */
  timeoutMs?: number;
}

export class Http {
  private readonly baseUrl: string;
  private readonly fetchImpl: typeof fetch;
  private token: string | null = null;
  private refreshing: Promise<string> | null = null;

  constructor(private readonly options: HttpOptions) {
    this.baseUrl = options.baseUrl.replace(/\/+$/, "");
    this.fetchImpl = options.fetch ?? globalThis.fetch.bind(globalThis);
  }

  /** The current token; after a refusal, one fresh token shared by every caller waiting on it. */
  async currentToken(refresh = false): Promise<string> {
    if (refresh || this.token === null) {
      const stale = this.token;
      this.refreshing ??= Promise.resolve(this.options.getToken({ refresh: refresh || stale !== null }))
        .then((token) => (this.token = token))
        .finally(() => (this.refreshing = null));
      return this.refreshing;
    }
    return this.token;
  }

  /** The host's getToken failing (its own network, its session service) is a passing failure
   * like any other network error: callers retry it rather than treat it as a refusal. */
  private async tokenOrNetworkError(refresh: boolean): Promise<string> {
    try {
      return await this.currentToken(refresh);
    } catch (cause) {
      throw new NetworkError(cause);
    }
  }

  /** One call; a 401 gets one retry with a fresh token. Throws ApiError or NetworkError. */
  async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    let token = await this.tokenOrNetworkError(false);
    for (let attempt = 0; ; attempt++) {
      let response: Response;
      try {
        response = await this.fetchImpl(this.baseUrl + path, {
          method,
          headers: {
            Authorization: `Bearer ${token}`,
            ...(body === undefined ? {} : { "Content-Type": "application/json" }),
          },
          body: body === undefined ? undefined : JSON.stringify(body),
          signal: AbortSignal.timeout(this.options.timeoutMs ?? 30_000),
        });
      } catch (cause) {
        throw new NetworkError(cause);
      }
      if (response.status === 401 && attempt === 0) {
        await response.body?.cancel();
        token = await this.tokenOrNetworkError(true);
        continue;
      }
      if (response.status === 204) return undefined as T;
      const text = await response.text();
      const data = text ? safeJson(text) : undefined;
      if (response.ok) return data as T;
      throw errorOf(response, data);
    }
  }

  // --- the calls a console needs ------------------------------------------------------------

  agents(query: { q?: string; status?: PresenceStatus; limit?: number; cursor?: string } = {}): Promise<AgentPage> {
    return this.request("GET", `/v1/agents${qs(query)}`);
  }

  conversations(query: { limit?: number; cursor?: string } = {}): Promise<ConversationPage> {
    return this.request("GET", `/v1/conversations${qs(query)}`);
  }

  conversation(id: string): Promise<Conversation> {
    return this.request("GET", `/v1/conversations/${enc(id)}`);
  }

  /** `participant_ids`, `team_ids` or both: a thread that asks teams is offered to their members. */
  startConversation(start: ConversationStart): Promise<Conversation> {
    return this.request("POST", "/v1/conversations", start);
  }

  /** The tenant's teams by name (`q`: a name prefix), with how many members are online. */
  teams(q?: string): Promise<TeamPage> {
    return this.request("GET", `/v1/teams${qs({ q })}`);
  }

  /** One team with its members and their presence. */
  team(id: string): Promise<Team> {
    return this.request("GET", `/v1/teams/${enc(id)}`);
  }

  /** Takes a team request offered to this agent, who joins the thread. Someone faster: ApiError
   * 409 `already_claimed`, whose `details.claimed_by` ({id, display_name}) names them. */
  claim(conversationId: string): Promise<Conversation> {
    return this.request("POST", `/v1/conversations/${enc(conversationId)}/claim`);
  }

  /** Gives a taken team request back to its teams (the asker, or the member who took it). */
  release(conversationId: string): Promise<Conversation> {
    return this.request("POST", `/v1/conversations/${enc(conversationId)}/release`);
  }

  messages(id: string, query: { before_seq?: number; after_seq?: number; limit?: number } = {}): Promise<MessagePage> {
    return this.request("GET", `/v1/conversations/${enc(id)}/messages${qs(query)}`);
  }

  postMessage(id: string, body: string, clientMsgId: string): Promise<Message> {
    return this.request("POST", `/v1/conversations/${enc(id)}/messages`, { body, client_msg_id: clientMsgId });
  }

  /**
   * Replaces the body of one's own message, within the tenant's edit window (15 minutes unless an
   * admin changed it): the message as it is now, with `edited_at`. The participants' streams get a
   * `message.updated` frame. Refusals are ApiErrors: 403 `edit_window_passed` (its message says how
   * long the window is), `not_author`, `system_message`; 409 `deleted`; 422 for an empty body.
   */
  editMessage(conversationId: string, seq: number, body: string): Promise<Message> {
    const edit: MessageEdit = { body };
    return this.request("PATCH", `/v1/conversations/${enc(conversationId)}/messages/${enc(String(seq))}`, edit);
  }

  /**
   * Deletes a message for everyone: its author within the edit window, a tenant admin any time.
   * Answers the tombstone (`body: ""`, `deleted_at` set); the participants' streams get a
   * `message.updated` frame with it. Refusals as for `editMessage`.
   */
  deleteMessage(conversationId: string, seq: number): Promise<Message> {
    return this.request("DELETE", `/v1/conversations/${enc(conversationId)}/messages/${enc(String(seq))}`);
  }

  addParticipants(id: string, agentIds: string[]): Promise<Conversation> {
    return this.request("POST", `/v1/conversations/${enc(id)}/participants`, { agent_ids: agentIds });
  }

  leave(id: string): Promise<void> {
    return this.request("DELETE", `/v1/conversations/${enc(id)}/participants/me`);
  }

  markRead(id: string, seq: number): Promise<ReadMarker> {
    return this.request("POST", `/v1/conversations/${enc(id)}/read`, { seq });
  }

  unread(): Promise<Unread> {
    return this.request("GET", "/v1/me/unread");
  }

  related(type: "ticket" | "chat", id: string): Promise<{ items: Conversation[] }> {
    return this.request("GET", `/v1/related/${enc(type)}/${enc(id)}/conversations`);
  }

  notificationPreferences(): Promise<NotificationPreferences> {
    return this.request("GET", "/v1/me/notification-preferences");
  }

  setDoNotDisturb(on: boolean): Promise<NotificationPreferences> {
    return this.request("PUT", "/v1/me/notification-preferences/do-not-disturb", { do_not_disturb: on });
  }

  /** No notification about this thread (email, webhook, the console's browser notification). */
  mute(id: string): Promise<void> {
    return this.request("PUT", `/v1/conversations/${enc(id)}/mute`);
  }

  unmute(id: string): Promise<void> {
    return this.request("DELETE", `/v1/conversations/${enc(id)}/mute`);
  }

  streamTicket(deviceId: string): Promise<Ticket> {
    return this.request("POST", "/v1/stream/tickets", { device_id: deviceId });
  }
}

function enc(part: string): string {
  return encodeURIComponent(part);
}

function qs(query: Record<string, string | number | undefined>): string {
  const parts = Object.entries(query)
    .filter(([, v]) => v !== undefined && v !== "")
    .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(String(v))}`);
  return parts.length ? `?${parts.join("&")}` : "";
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

function errorOf(response: Response, data: unknown): ApiError {
  const error = (data as { error?: { code?: string; message?: string; field?: string; request_id?: string;
    details?: Record<string, unknown> | null } })?.error;
  const retry = Number(response.headers.get("Retry-After"));
  return new ApiError(
    response.status,
    error?.code ?? `http_${response.status}`,
    error?.message ?? response.statusText,
    error?.field,
    error?.request_id ?? response.headers.get("X-Request-Id") ?? undefined,
    Number.isFinite(retry) && retry > 0 ? retry : undefined,
    error?.details ?? undefined,
  );
}
