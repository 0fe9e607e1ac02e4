/**
 * @helpdesk-im/client — everything a help desk front end needs to talk to Helpdesk IM:
 * `client.http` (im-api), `client.stream` (live delivery) and `client.sends` (idempotent sends).
 *
 *   const im = new HelpdeskIm({ baseUrl: "/im", getToken: ({ refresh }) => host.imToken(refresh),
 *                               storage: localStorage, namespace: `im:${tenant}:${agent}` });
 *   const page = await im.http.conversations();
 *   im.stream.on("frame", render);
 *   im.stream.start(page.stream_cursor);
 *   await im.sends.send(conversationId, "Can you look at this ticket?");
 */

import type { BackoffOptions } from "./backoff.js";
import { type GetToken, Http } from "./http.js";
import { Sender } from "./sends.js";
import { type KeyValueStorage, MemoryStorage } from "./storage.js";
import { type SocketFactory, Stream } from "./stream.js";

export { Backoff, sleep } from "./backoff.js";
export type { BackoffOptions } from "./backoff.js";
export * from "./generated/frames.js";
export type { components as ApiSchemas, paths as ApiPaths } from "./generated/api.js";
export { ApiError, Http, NetworkError } from "./http.js";
export type {
  Agent,
  AgentPage,
  Conversation,
  ConversationPage,
  ConversationStart,
  GetToken,
  ListedAgent,
  Message,
  MessageEdit,
  MessagePage,
  MessageSettings,
  NotificationPreferences,
  PresenceStatus,
  ReadMarker,
  RelatedItem,
  Team,
  TeamMember,
  TeamPage,
  TeamRequest,
  Ticket,
  Unread,
} from "./http.js";
export { Sender } from "./sends.js";
export type { PendingSend, SenderOptions } from "./sends.js";
export { MemoryStorage } from "./storage.js";
export type { KeyValueStorage } from "./storage.js";
export { Stream } from "./stream.js";
export type { LiveFrame, QueuedFrame, SocketFactory, SocketLike, StreamEvents, StreamOptions, StreamState } from "./stream.js";

export interface HelpdeskImOptions {
  /** im-api's base URL. */
  baseUrl: string;
  /** The host page's token source (see GetToken): called at first use and after a refusal. */
  getToken: GetToken;
  /** Keeps unsent messages and the device id across reloads (e.g. `localStorage`); default: memory. */
  storage?: KeyValueStorage;
  /** Prefix of every storage key: one per signed-in agent, e.g. `im:<tenant>:<agent>`. */
  namespace?: string;
  /** A stable device id; default: made once and kept in `storage`. */
  deviceId?: string;
  fetch?: typeof fetch;
  WebSocket?: SocketFactory;
  reconnect?: BackoffOptions;
  sendRetry?: BackoffOptions;
  slowDownMs?: number;
  followVisibility?: boolean;
}

export class HelpdeskIm {
  readonly http: Http;
  readonly stream: Stream;
  readonly sends: Sender;
  readonly deviceId: string;

  constructor(options: HelpdeskImOptions) {
    const storage = options.storage ?? new MemoryStorage();
    const ns = options.namespace ?? "helpdesk-im";
    this.deviceId = options.deviceId ?? deviceIdFrom(storage, `${ns}:device`);
    this.http = new Http({ baseUrl: options.baseUrl, getToken: options.getToken, fetch: options.fetch });
    this.stream = new Stream(this.http, {
      deviceId: this.deviceId,
      WebSocket: options.WebSocket,
      reconnect: options.reconnect,
      slowDownMs: options.slowDownMs,
      followVisibility: options.followVisibility,
    });
    this.sends = new Sender(this.http, { storage, key: `${ns}:pending`, retry: options.sendRetry });
  }

  /** Stops the stream and the send retries (unsent messages stay in storage). */
  close(): void {
    this.stream.stop();
    this.sends.close();
  }
}

function deviceIdFrom(storage: KeyValueStorage, key: string): string {
  let id = storage.getItem(key);
  if (!id) {
    id = `web-${globalThis.crypto.randomUUID()}`;
    storage.setItem(key, id);
  }
  return id;
}
