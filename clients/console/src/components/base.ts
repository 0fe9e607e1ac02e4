/** What every console component shares: the page's store (re-render on change) and the styles. */

import { css, LitElement } from "lit";
import { type ConsoleStore, whenConfigured } from "../store.js";

export class StoreElement extends LitElement {
  protected store: ConsoleStore | null = null;
  private readonly onChange = () => this.requestUpdate();

  override connectedCallback(): void {
    super.connectedCallback();
    void whenConfigured().then((store) => {
      if (!this.isConnected) return;
      this.store = store;
      store.addEventListener("change", this.onChange);
      this.storeReady(store);
      this.requestUpdate();
    });
  }

  override disconnectedCallback(): void {
    super.disconnectedCallback();
    this.store?.removeEventListener("change", this.onChange);
  }

  /** Called once the host page configured the store. */
  protected storeReady(_store: ConsoleStore): void {}
}

export const shared = css`
  :host {
    --im-accent: #1f5fbf;
    --im-accent-text: #ffffff;
    --im-border: #c9ced6;
    --im-muted: #4f5866;
    --im-bg: #ffffff;
    --im-bg-alt: #f3f5f8;
    --im-online: #137a3a;
    --im-away: #9a6700;
    --im-offline: #6b7280;
    font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
    font-size: 14px;
    color: #15191f;
    box-sizing: border-box;
  }
  *, *::before, *::after { box-sizing: inherit; }
  button {
    font: inherit;
    cursor: pointer;
    border: 1px solid var(--im-border);
    background: var(--im-bg);
    color: inherit;
    border-radius: 6px;
    padding: 6px 12px;
    min-height: 32px;
  }
  button.primary { background: var(--im-accent); color: var(--im-accent-text); border-color: var(--im-accent); }
  button:disabled { opacity: 0.6; cursor: default; }
  :focus-visible { outline: 3px solid #f0a202; outline-offset: 2px; }
  .dot { display: inline-block; width: 10px; height: 10px; border-radius: 50%; flex: none; }
  .dot.online { background: var(--im-online); }
  .dot.away { background: var(--im-away); }
  .dot.offline { background: transparent; border: 2px solid var(--im-offline); }
  .visually-hidden {
    position: absolute; width: 1px; height: 1px; margin: -1px; padding: 0; overflow: hidden;
    clip: rect(0 0 0 0); white-space: nowrap; border: 0;
  }
  .related {
    display: inline-flex; align-items: center; gap: 4px; padding: 2px 8px; border-radius: 999px;
    background: #e7effc; color: #123d7a; font-size: 12px; font-weight: 600; text-decoration: none;
    max-width: 100%; overflow: hidden; text-overflow: ellipsis; white-space: nowrap;
  }
  a.related:hover { text-decoration: underline; }
  .team {
    display: inline-block; padding: 2px 8px; border-radius: 999px; background: #fff1d6; color: #5c3400;
    font-size: 12px; font-weight: 600; white-space: nowrap;
  }
  .badge {
    display: inline-flex; align-items: center; justify-content: center; min-width: 20px; height: 20px;
    padding: 0 6px; border-radius: 10px; background: #b42318; color: #fff; font-size: 12px; font-weight: 700;
  }
`;

/** "14:05" today, "Mon 14:05" this week, else "12 Nov". */
export function when(iso: string | null | undefined): string {
  if (!iso) return "";
  const d = new Date(iso);
  const now = new Date();
  const hm = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  if (d.toDateString() === now.toDateString()) return hm;
  if (now.getTime() - d.getTime() < 6 * 86_400_000) return `${d.toLocaleDateString([], { weekday: "short" })} ${hm}`;
  return d.toLocaleDateString([], { day: "numeric", month: "short" });
}

export const STATUS_TEXT: Record<string, string> = { online: "Online", away: "Away", offline: "Offline" };
