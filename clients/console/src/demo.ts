/**
 * The demo host page: what a help desk does to embed Helpdesk IM — sign the agent in (here: the
 * development sign-in), `configure()` once, and place the components. The token is the host's
 * to keep; this page keeps it for the browser tab (sessionStorage) so a reload stays signed in.
 */

import { configure } from "./index.js";

interface Session { tenant: string; agent: string; name: string; token: string }
const SESSION_KEY = "im-demo-session";

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
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(data?.error?.message ?? `sign-in refused (${r.status})`);
  const session = { tenant, agent, name: name || agent, token: data.token as string };
  sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
  return session;
}

function route(): void {
  const [, page = "im"] = location.hash.split("/");
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
  out.addEventListener("click", () => {
    sessionStorage.removeItem(SESSION_KEY);
    location.hash = "";
    location.reload();
  });
  who.append(out);
  let current = session;
  configure({
    baseUrl: location.origin,
    agentId: session.agent,
    getToken: async ({ refresh }) => {
      if (refresh) current = await signIn(current.tenant, current.agent, current.name);
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
  el<HTMLInputElement>("signin-form").querySelector<HTMLInputElement>("input[name=agent]")?.focus();
  el<HTMLFormElement>("signin-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const form = new FormData(e.target as HTMLFormElement);
    signIn(String(form.get("tenant")), String(form.get("agent")), String(form.get("name") ?? ""))
      .then(start)
      .catch((error: Error) => (el("signin-error").textContent = error.message));
  });
}
