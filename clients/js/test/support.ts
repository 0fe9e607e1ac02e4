/** Test helpers: tokens minted like the dev CLI mints them, waiting on conditions, the stack's control. */

import { createHmac } from "node:crypto";
import { HelpdeskIm, type HelpdeskImOptions, MemoryStorage } from "../src/index.js";

export const env = {
  api: required("IM_TEST_API_URL"),
  secret: required("IM_TEST_JWT_SECRET"),
  control: required("IM_TEST_CONTROL_URL"),
  tenant: required("IM_TEST_TENANT"),
};

function required(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: these tests run from tests/clients/test_js_client.py`);
  return value;
}

function b64url(data: string | Buffer): string {
  return Buffer.from(data).toString("base64url");
}

/** An HS256 JWT with API.md's claims; `ttlS` ≤ 0 makes an expired one. */
export function mint(agent: string, options: { tenant?: string; role?: string; ttlS?: number } = {}): string {
  const now = Math.floor(Date.now() / 1000);
  const claims = { tid: options.tenant ?? env.tenant, sub: agent, role: options.role ?? "agent", iat: now - 60,
    exp: now + (options.ttlS ?? 600) };
  const head = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const body = b64url(JSON.stringify(claims));
  const sig = createHmac("sha256", env.secret).update(`${head}.${body}`).digest("base64url");
  return `${head}.${body}.${sig}`;
}

/** A client for `agent` as a console makes one; `calls` counts the token callback's calls. */
export function clientFor(agent: string, extra: Partial<HelpdeskImOptions> = {}) {
  const calls: boolean[] = [];
  const im = new HelpdeskIm({
    baseUrl: env.api,
    getToken: ({ refresh }) => {
      calls.push(refresh);
      return mint(agent);
    },
    storage: new MemoryStorage(),
    namespace: `im:${env.tenant}:${agent}`,
    reconnect: { initialMs: 100, maxMs: 1_000 },
    sendRetry: { initialMs: 50, maxMs: 500 },
    followVisibility: false,
    ...extra,
  });
  return { im, calls };
}

/** Polls `condition` until it holds (never a bare sleep); fails with `what` after `timeoutMs`. */
export async function until<T>(condition: () => T | Promise<T>, what: string, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await condition();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Asks the pytest side to act on the stack (e.g. SIGKILL the gateway and start it again). */
export async function control(action: string): Promise<void> {
  const r = await fetch(`${env.control}/${action}`, { method: "POST" });
  if (!r.ok) throw new Error(`control ${action}: ${r.status} ${await r.text()}`);
}
