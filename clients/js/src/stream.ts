/**
 * The delivery stream (`GET /v1/stream`, API.md) done once, right: a single-use ticket per
 * connect, resume after the last processed cursor, acks, batches unpacked, every queued frame
 * handed over exactly once (delivery is at-least-once on the wire), reconnects with jittered
 * backoff, a reload over HTTP on 4409, a fresh token on 4401, a slower pace on 4429, and
 * idle/active from the page's visibility.
 */

import { Backoff, type BackoffOptions, sleep } from "./backoff.js";
import type {
  Batch,
  ConversationUpdated,
  MessageCreated,
  MessageUpdated,
  PresenceChanged,
  ReadUpdated,
  ServerFrame,
  TeamRequestClaimed,
  TeamRequestOffered,
  TeamRequestReleased,
  TypingStarted,
} from "./generated/frames.js";
import type { ConversationPage, Http } from "./http.js";

/** Every frame with a cursor: what a batch carries and a reconnect replays. */
export type QueuedFrame =
  | MessageCreated
  | MessageUpdated
  | ConversationUpdated
  | ReadUpdated
  | TeamRequestOffered
  | TeamRequestClaimed
  | TeamRequestReleased;
export type LiveFrame = PresenceChanged | TypingStarted;

export type StreamState = "idle" | "connecting" | "open" | "reconnecting" | "stopped";

export interface StreamEvents {
  /** A queued frame, once, in cursor order; or a live frame (presence, typing). */
  frame: QueuedFrame | LiveFrame;
  /** The server no longer holds the cursor (4409): the page was reloaded over HTTP; rebuild from it. */
  reload: ConversationPage;
  state: StreamState;
  /** Something went wrong that the stream recovers from by itself (for logs and banners). */
  error: Error;
}

type Listener<K extends keyof StreamEvents> = (event: StreamEvents[K]) => void;

// Fails to compile when the contracts add a frame that neither union names: listeners are typed by
// these unions, so an unnamed frame would reach them unseen by the compiler.
const everyFrameNamed: [Exclude<ServerFrame, Batch | QueuedFrame | LiveFrame>] extends [never] ? true : never = true;
void everyFrameNamed;

/** What the library needs of a WebSocket: the browser's, or Node's global one (Node ≥ 22; 20 with
 * --experimental-websocket). */
export interface SocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason?: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
}
export type SocketFactory = new (url: string) => SocketLike;

export interface StreamOptions {
  /** A stable id per browser or device (the server keeps one cursor per device). */
  deviceId: string;
  WebSocket?: SocketFactory;
  reconnect?: BackoffOptions;
  /** How long to stay away after 4429 (too slow) before reconnecting (ms). */
  slowDownMs?: number;
  /** A socket open this long counts as healthy: the reconnect waits start short again (ms). */
  healthyAfterMs?: number;
  /** Give up on a connect whose handshake has not completed after this long (ms). */
  connectTimeoutMs?: number;
  /** Typing frames for one thread at most this often (ms). */
  typingEveryMs?: number;
  /** Send idle/active as the page is hidden/shown (default: when a `document` exists). */
  followVisibility?: boolean;
}

const OPEN = 1;

export class Stream {
  private readonly listeners: { [K in keyof StreamEvents]: Set<Listener<K>> } = {
    frame: new Set(),
    reload: new Set(),
    state: new Set(),
    error: new Set(),
  };
  private readonly backoff: Backoff;
  private readonly WebSocketImpl: SocketFactory;
  private socket: SocketLike | null = null;
  private stopper: AbortController | null = null;
  private lastTyping = new Map<string, number>();
  private active = true;
  private _state: StreamState = "idle";
  /** 4401/4409 closes since the last healthy socket: the first reconnects at once, later ones back off. */
  private refusals = 0;
  /** The last queued frame handed over: frames at or below it are dropped, reconnects resume after it. */
  cursor: number | null = null;

  constructor(
    private readonly http: Http,
    private readonly options: StreamOptions,
  ) {
    this.backoff = new Backoff(options.reconnect);
    const impl = options.WebSocket ?? (globalThis as { WebSocket?: SocketFactory }).WebSocket;
    if (!impl) throw new Error("no WebSocket implementation: pass options.WebSocket");
    this.WebSocketImpl = impl;
  }

  get state(): StreamState {
    return this._state;
  }

  on<K extends keyof StreamEvents>(event: K, listener: Listener<K>): () => void {
    this.listeners[event].add(listener);
    return () => this.listeners[event].delete(listener);
  }

  /**
   * Connects and keeps connected until `stop()`. `cursor`: resume after it (the `stream_cursor`
   * of the thread list the page just loaded); without one the server resumes after this device's
   * last ack.
   */
  start(cursor?: number | null): void {
    if (this.stopper) return;
    if (cursor !== undefined && cursor !== null) this.cursor = cursor;
    const stopper = new AbortController();
    this.stopper = stopper;
    this.watchVisibility(stopper.signal);
    void this.run(stopper.signal);
  }

  stop(): void {
    this.stopper?.abort(new Error("stopped"));
    this.stopper = null;
    this.socket?.close(1000, "client stopped");
    this.socket = null;
    this.setState("stopped");
  }

  /** Tells the other participants this agent is typing (throttled per thread). */
  typing(conversationId: string): void {
    const now = Date.now();
    if (now - (this.lastTyping.get(conversationId) ?? 0) < (this.options.typingEveryMs ?? 2_000)) return;
    this.lastTyping.set(conversationId, now);
    this.sendFrame({ type: "typing", conversation_id: conversationId });
  }

  /** Idle (page hidden, agent away from the console) or active again: presence follows. */
  setActive(active: boolean): void {
    if (active === this.active) return;
    this.active = active;
    this.sendFrame({ type: active ? "active" : "idle" });
  }

  // --- the connection loop ------------------------------------------------------------------

  private async run(signal: AbortSignal): Promise<void> {
    let pause = 0;
    while (!signal.aborted) {
      if (pause > 0) {
        try {
          await sleep(pause, signal);
        } catch {
          return;
        }
      }
      this.setState(this._state === "idle" ? "connecting" : "reconnecting");
      let code: number;
      try {
        code = await this.connectOnce(signal);
      } catch (error) {
        if (signal.aborted) return;
        this.emit("error", error instanceof Error ? error : new Error(String(error)));
        pause = this.backoff.next(); // no ticket (im-api away, offline): try again later
        continue;
      }
      if (signal.aborted) return;
      pause = await this.afterClose(code);
      if (pause < 0) {
        this.stop(); // refused for good: retrying cannot help
        return;
      }
    }
  }

  /** What a close code means for the next connect: the pause before it (ms), or -1 for none at all. */
  private async afterClose(code: number): Promise<number> {
    switch (code) {
      case 4401: // the token behind the socket expired or was revoked: a fresh one, then at once
        try {
          await this.http.currentToken(true);
        } catch (error) {
          this.emit("error", error instanceof Error ? error : new Error(String(error)));
          return this.backoff.next();
        }
        return this.refusals++ === 0 ? 0 : this.backoff.next(); // refused again at once: slow down
      case 4409: // the server no longer holds our cursor: reload over HTTP, resume after its cursor
        try {
          const page = await this.http.conversations();
          this.cursor = page.stream_cursor;
          this.emit("reload", page);
        } catch (error) {
          this.emit("error", error instanceof Error ? error : new Error(String(error)));
          return this.backoff.next();
        }
        return this.refusals++ === 0 ? 0 : this.backoff.next();
      case 4403: // this page's origin is not allowed by the gateway: a deployment error, not a blip
        this.emit("error", new Error("the gateway refused this page's origin (4403): check IM_DELIVERY_ALLOWED_ORIGINS"));
        return -1;
      case 4400: // the gateway could not read what we sent: a bug here, which a retry would repeat
        this.emit("error", new Error("the gateway refused a frame or parameter of this client (4400)"));
        return -1;
      case 4429: // too slow: the server gave up on us; come back after a pause, with our cursor
        return (this.options.slowDownMs ?? 2_000) + this.backoff.next();
      default: // 1012 server restarting, 1006 network lost, anything else
        return this.backoff.next();
    }
  }

  /** One socket's life; resolves with its close code. */
  private async connectOnce(signal: AbortSignal): Promise<number> {
    const ticket = await this.http.streamTicket(this.options.deviceId);
    if (signal.aborted) return 1000;
    const url = new URL(ticket.url);
    if (this.cursor !== null) url.searchParams.set("cursor", String(this.cursor));
    const socket = new this.WebSocketImpl(url.toString());
    this.socket = socket;
    return new Promise<number>((resolve) => {
      let settled = false;
      let healthy: ReturnType<typeof setTimeout> | undefined;
      const finish = (code: number) => {
        if (settled) return;
        settled = true;
        clearTimeout(opening);
        clearTimeout(healthy);
        if (this.socket === socket) this.socket = null;
        resolve(code);
      };
      // A handshake that never completes (a server that accepts and hangs) must not hold us.
      const opening = setTimeout(() => {
        socket.onclose = null;
        socket.close();
        finish(1006);
      }, this.options.connectTimeoutMs ?? 10_000);
      socket.onopen = () => {
        clearTimeout(opening);
        // Healthy once it has stayed open a while: a server that closes right after the replay
        // (flapping) must not bring every client back at the shortest wait.
        healthy = setTimeout(() => {
          this.backoff.reset();
          this.refusals = 0;
        }, this.options.healthyAfterMs ?? 5_000);
        this.setState("open");
        if (!this.active) socket.send(JSON.stringify({ type: "idle" }));
      };
      socket.onmessage = (event) => {
        if (typeof event.data === "string") this.receive(event.data, socket);
      };
      // Some implementations report a failed connect with "error" and no "close": either ends it.
      socket.onerror = () => {
        if (socket.readyState !== OPEN) finish(1006);
      };
      socket.onclose = (event) => finish(event.code);
    });
  }

  /** One WebSocket message: unpack, drop what was already handed over, hand over, ack. */
  private receive(data: string, socket: SocketLike): void {
    let frame: ServerFrame;
    try {
      frame = JSON.parse(data) as ServerFrame;
    } catch {
      this.emit("error", new Error("unreadable frame ignored"));
      return;
    }
    const frames = frame.type === "batch" ? frame.frames : [frame];
    let advanced = false;
    for (const f of frames) {
      if ("cursor" in f && typeof f.cursor === "number") {
        if (this.cursor !== null && f.cursor <= this.cursor) continue; // a replayed duplicate
        this.cursor = f.cursor;
        advanced = true;
      }
      this.emit("frame", f as QueuedFrame | LiveFrame);
    }
    if (advanced && socket.readyState === OPEN) socket.send(JSON.stringify({ type: "ack", cursor: this.cursor }));
  }

  private sendFrame(frame: object): void {
    if (this.socket?.readyState === OPEN) this.socket.send(JSON.stringify(frame));
  }

  private watchVisibility(signal: AbortSignal): void {
    const doc = (globalThis as { document?: Document }).document;
    if (!doc || this.options.followVisibility === false) return;
    const update = () => this.setActive(doc.visibilityState !== "hidden");
    doc.addEventListener("visibilitychange", update, { signal });
    update();
  }

  private setState(state: StreamState): void {
    if (state === this._state) return;
    this._state = state;
    this.emit("state", state);
  }

  private emit<K extends keyof StreamEvents>(event: K, value: StreamEvents[K]): void {
    for (const listener of this.listeners[event]) {
      try {
        listener(value);
      } catch (error) {
        // One broken listener must not stop the stream (nor the other listeners).
        if (event !== "error") this.emit("error", error instanceof Error ? error : new Error(String(error)));
      }
    }
  }
}
