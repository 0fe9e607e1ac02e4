/**
 * The demo host page: what a help desk does to embed Helpdesk IM — sign the agent in (here: the
 * development sign-in, or a token minted by `imctl token` where that sign-in is off), `configure()`
 * once, and place the components. The token is the host's to keep; this page keeps it for the
 * browser tab (sessionStorage) so a reload stays signed in.
 */

import { configure } from "./index.js";

interface Session { tenant: string; agent: string; name: string; token: string; via: "dev" | "token" }
const SESSION_KEY = "im-demo-session";
const EXPIRED_KEY = "im-demo-expired"; // why the sign-in shows again, for the next page load

function el<T extends HTMLElement>(id: string): T {
  return document.getElementById(id) as T;
}

function saved(): Session | null {
  try {
    return JSON.parse(sessionStorage.getItem(SESSION_KEY) ?? "null") as Session | null;
  } catch {
    return null;
  }
}

async function signIn(tenant: string, agent: string, name: string): Promise<Session> {
  const r = await fetch("/dev/signin", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ tenant_id: tenant, agent_id: agent, display_name: name || agent }),
  });
  if (r.status === 404) throw new Error("The development sign-in is off on this server: sign in with a token.");
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(data?.error?.message ?? `sign-in refused (${r.status})`);
  return keep({ tenant, agent, name: name || agent, token: data.token as string, via: "dev" });
}

function keep(session: Session): Session {
  sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
  return session;
}

/** A token from `imctl token`: its claims name the tenant and agent; the server checks it. */
async function signInWithToken(token: string): Promise<Session> {
  let claims: { tid?: unknown; sub?: unknown; role?: unknown };
  try {
    const payload = token.split(".")[1] ?? "";
    claims = JSON.parse(atob(payload.replace(/-/g, "+").replace(/_/g, "/")));
  } catch {
    throw new Error("This is not a token (expected three dot-separated parts, as imctl token prints).");
  }
  if (typeof claims.tid !== "string" || typeof claims.sub !== "string") throw new Error("The token names no tenant or agent.");
  if (claims.role === "service") throw new Error("This is a service token: use an agent's (or an admin's).");
  const r = await fetch("/v1/me/unread", { headers: { Authorization: `Bearer ${token}` } });
  if (r.status === 401) throw new Error("The server refused the token (expired, or signed with another secret).");
  if (!r.ok) throw new Error(`sign-in refused (${r.status})`);
  return keep({ tenant: claims.tid, agent: claims.sub, name: claims.sub, token, via: "token" });
}

function signOut(): void {
  sessionStorage.removeItem(SESSION_KEY);
  location.hash = "";
  location.reload();
}

function route(): void {
  // "#/im/<conversation id>": a link from a notification (the notifier's IM_NOTIFIER_THREAD_URL_TEMPLATE).
  const [, page = "im", thread] = location.hash.split("/");
  if (page === "im" && thread) document.querySelector("im-console")?.open(decodeURIComponent(thread));
  for (const id of ["im", "ticket", "chat"]) el(`page-${id}`).hidden = id !== page;
  for (const a of document.querySelectorAll<HTMLAnchorElement>("nav a")) {
    if (a.dataset.route === page) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
}

function start(session: Session): void {
  el("signin").hidden = true;
  el("nav").hidden = false;
  const who = el("who");
  who.textContent = `${session.name} · ${session.tenant} `;
  const out = document.createElement("button");
  out.textContent = "Sign out";
  out.addEventListener("click", signOut);
  who.append(out);
  let current = session;
  configure({
    baseUrl: location.origin,
    agentId: session.agent,
    getToken: async ({ refresh }) => {
      if (refresh && current.via === "dev") current = await signIn(current.tenant, current.agent, current.name);
      // A pasted token cannot be renewed here: back to the sign-in, saying why, to paste a fresh one.
      else if (refresh) {
        sessionStorage.setItem(EXPIRED_KEY, "1");
        signOut();
        throw new Error("the token was refused (expired?): sign in again");
      }
      return current.token;
    },
    storage: localStorage,
    namespace: `im:${session.tenant}:${session.agent}`,
    relatedUrlTemplate: `${location.pathname}#/{type}/{id}`,
  });
  window.addEventListener("hashchange", route);
  if (!location.hash) location.hash = "#/im";
  route();
}

const existing = saved();
if (existing) {
  start(existing);
} else {
  el("signin").hidden = false;
  if (sessionStorage.getItem(EXPIRED_KEY)) {
    sessionStorage.removeItem(EXPIRED_KEY);
    el("token-error").textContent = "The server no longer accepts your token (it expires): paste a fresh one.";
  }
  el<HTMLInputElement>("signin-form").querySelector<HTMLInputElement>("input[name=agent]")?.focus();
  el<HTMLFormElement>("signin-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const form = new FormData(e.target as HTMLFormElement);
    signIn(String(form.get("tenant")), String(form.get("agent")), String(form.get("name") ?? ""))
      .then(start)
      .catch((error: Error) => (el("signin-error").textContent = error.message));
  });
  el<HTMLFormElement>("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const token = String(new FormData(e.target as HTMLFormElement).get("token") ?? "").trim();
    signInWithToken(token)
      .then(start)
      .catch((error: Error) => (el("token-error").textContent = error.message));
  });
}
