/**
 * Sending a message so that a flaky network never loses or duplicates it: each message gets its
 * `client_msg_id` once, is kept in storage until the server answers (so a page reload resumes it),
 * and is retried with the same id until then — the server stores it once (API.md: the same
 * `client_msg_id` with the same body answers 200 with the first one).
 */

import { Backoff, type BackoffOptions, sleep } from "./backoff.js";
import { ApiError, type Http, type Message } from "./http.js";
import { type KeyValueStorage, readJson } from "./storage.js";

export interface PendingSend {
  conversationId: string;
  body: string;
  clientMsgId: string;
  queuedAt: string;
}

export interface SenderOptions {
  storage: KeyValueStorage;
  /** Storage key of the unsent messages (one per signed-in agent, e.g. `im:<tenant>:<agent>`). */
  key: string;
  retry?: BackoffOptions;
}

export class Sender {
  private readonly inFlight = new Map<string, Promise<Message>>();
  /** Per thread, the last send queued: the next one starts after it is answered, so messages
   * typed in order are stored in that order (two POSTs in flight could land the other way round). */
  private readonly tails = new Map<string, Promise<unknown>>();
  private readonly stopper = new AbortController();

  constructor(
    private readonly http: Http,
    private readonly options: SenderOptions,
  ) {}

  /** Sends `body`; resolves with the stored message once the server has it. Retries by itself while
   * the network or the server is away; rejects only on a refusal (ApiError 4xx) or `close()`. */
  send(conversationId: string, body: string): Promise<Message> {
    const pending: PendingSend = {
      conversationId,
      body,
      clientMsgId: newId(),
      queuedAt: new Date().toISOString(),
    };
    this.write([...this.pending(), pending]);
    return this.deliver(pending);
  }

  /** The messages not yet confirmed by the server (oldest first), e.g. to show them as "sending". */
  pending(conversationId?: string): PendingSend[] {
    const all = readJson<PendingSend[]>(this.options.storage, this.options.key, []);
    return conversationId === undefined ? all : all.filter((p) => p.conversationId === conversationId);
  }

  /** After a page reload: sends again whatever was still unconfirmed (same ids: stored once). */
  resume(): Promise<Message>[] {
    return this.pending().map((p) => this.deliver(p));
  }

  /** Stops retrying (what is unsent stays in storage for the next page). */
  close(): void {
    this.stopper.abort(new Error("sender closed"));
  }

  private deliver(pending: PendingSend): Promise<Message> {
    const running = this.inFlight.get(pending.clientMsgId);
    if (running) return running;
    const before = this.tails.get(pending.conversationId) ?? Promise.resolve();
    const attempt = before
      .catch(() => undefined) // a refused predecessor does not hold the next one back
      .then(() => this.post(pending))
      .finally(() => {
        this.inFlight.delete(pending.clientMsgId);
        if (this.tails.get(pending.conversationId) === attempt) this.tails.delete(pending.conversationId);
      });
    this.inFlight.set(pending.clientMsgId, attempt);
    this.tails.set(pending.conversationId, attempt);
    return attempt;
  }

  private async post(pending: PendingSend): Promise<Message> {
    const backoff = new Backoff(this.options.retry ?? { initialMs: 300, maxMs: 10_000 });
    for (;;) {
      try {
        const message = await this.http.postMessage(pending.conversationId, pending.body, pending.clientMsgId);
        this.forget(pending.clientMsgId);
        return message;
      } catch (error) {
        // Only the server's refusal of this message ends it (a 4xx other than 401). The network,
        // a busy server, a token the host could not refresh just now (a 401 after the refresh, or
        // the host's getToken failing): the message stays pending and is tried again.
        const refused = error instanceof ApiError && !error.transient && error.status !== 401;
        if (refused) {
          this.forget(pending.clientMsgId); // refused (not a participant, too long, ...): never resent
          throw error;
        }
        const wait = error instanceof ApiError && error.retryAfterS ? error.retryAfterS * 1000 : backoff.next();
        await sleep(wait, this.stopper.signal);
      }
    }
  }

  private forget(clientMsgId: string): void {
    this.write(this.pending().filter((p) => p.clientMsgId !== clientMsgId));
  }

  private write(all: PendingSend[]): void {
    if (all.length) this.options.storage.setItem(this.options.key, JSON.stringify(all));
    else this.options.storage.removeItem(this.options.key);
  }
}

function newId(): string {
  return globalThis.crypto.randomUUID();
}
