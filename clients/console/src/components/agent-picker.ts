/**
 * `<im-agent-picker>`: the modal every entry point uses to pick one or several agents — search by
 * name, online first, then away, then offline (offline agents can be picked: they find the thread
 * when they come back). A native <dialog>: focus stays inside, Escape closes, focus returns.
 *
 *   const ids = await picker.pick({ title: "Ask for assistance" });   // null when cancelled
 */

import { type ListedAgent } from "@helpdesk-im/client";
import { css, html, nothing } from "lit";
import { customElement, query, state } from "lit/decorators.js";
import { shared, STATUS_TEXT, StoreElement } from "./base.js";

@customElement("im-agent-picker")
export class AgentPicker extends StoreElement {
  static override styles = [shared, css`
    dialog {
      border: 1px solid var(--im-border); border-radius: 10px; padding: 0; width: min(440px, calc(100vw - 24px));
      max-height: min(640px, calc(100vh - 24px)); box-shadow: 0 12px 40px rgba(0, 0, 0, 0.25);
    }
    dialog::backdrop { background: rgba(15, 20, 30, 0.45); }
    form { display: flex; flex-direction: column; max-height: inherit; }
    header { padding: 14px 16px 8px; }
    h2 { margin: 0 0 10px; font-size: 17px; }
    input[type="search"] {
      width: 100%; font: inherit; padding: 8px 10px; border: 1px solid var(--im-border); border-radius: 6px;
    }
    ul { list-style: none; margin: 0; padding: 4px 8px; overflow-y: auto; flex: 1; min-height: 120px; }
    li label {
      display: flex; align-items: center; gap: 10px; padding: 8px; border-radius: 6px; cursor: pointer;
      content-visibility: auto; contain-intrinsic-size: auto 40px;
    }
    li label:hover { background: var(--im-bg-alt); }
    .name { flex: 1; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
    .status { color: var(--im-muted); font-size: 12px; }
    footer { display: flex; justify-content: space-between; align-items: center; gap: 8px; padding: 10px 16px;
      border-top: 1px solid var(--im-border); }
    .empty { padding: 16px; color: var(--im-muted); }
  `];

  @state() private agents: ListedAgent[] = [];
  @state() private chosen = new Set<string>();
  @state() private heading = "New Instant Message";
  @state() private searching = false;
  @query("dialog") private dialog!: HTMLDialogElement;
  @query("input[type=search]") private search!: HTMLInputElement;
  private resolve: ((ids: string[] | null) => void) | null = null;
  private debounce: ReturnType<typeof setTimeout> | null = null;
  private opener: Element | null = null;
  private asked = 0;

  /** Opens the modal; resolves with the picked agent ids, or null when cancelled. */
  async pick(options: { title?: string } = {}): Promise<string[] | null> {
    this.heading = options.title ?? "New Instant Message";
    this.chosen = new Set();
    this.opener = deepActiveElement();
    await this.updateComplete;
    this.dialog.showModal();
    this.search.value = "";
    this.search.focus();
    void this.load("");
    return new Promise((resolve) => (this.resolve = resolve));
  }

  private async load(q: string): Promise<void> {
    if (!this.store) return;
    const asked = ++this.asked; // a slower, older answer must not replace a newer one
    this.searching = true;
    try {
      const agents = await this.store.agents(q);
      if (asked === this.asked) this.agents = agents;
    } finally {
      if (asked === this.asked) this.searching = false;
    }
  }

  private onSearch(): void {
    if (this.debounce) clearTimeout(this.debounce);
    this.debounce = setTimeout(() => void this.load(this.search.value.trim()), 200);
  }

  private toggle(id: string, on: boolean): void {
    const next = new Set(this.chosen);
    if (on) next.add(id);
    else next.delete(id);
    this.chosen = next;
  }

  private finish(ids: string[] | null): void {
    if (this.dialog.open) this.dialog.close();
    this.resolve?.(ids);
    this.resolve = null;
    (this.opener as HTMLElement | null)?.focus?.();
  }

  override render() {
    const names = this.agents.filter((a) => this.chosen.has(a.id)).map((a) => a.display_name);
    return html`
      <dialog aria-labelledby="picker-title" @cancel=${(e: Event) => { e.preventDefault(); this.finish(null); }}>
        <form method="dialog" @submit=${(e: Event) => { e.preventDefault(); if (this.chosen.size) this.finish([...this.chosen]); }}>
          <header>
            <h2 id="picker-title">${this.heading}</h2>
            <label class="visually-hidden" for="q">Search agents by name</label>
            <input id="q" type="search" placeholder="Search agents by name" autocomplete="off"
              @input=${this.onSearch} aria-controls="agents" />
          </header>
          <ul id="agents" aria-label="Agents" aria-busy=${this.searching ? "true" : "false"}>
            ${this.agents.length === 0 && !this.searching ? html`<li class="empty">No agent matches.</li>` : nothing}
            ${this.agents.map((a) => html`
              <li>
                <label>
                  <input type="checkbox" .checked=${this.chosen.has(a.id)} data-agent=${a.id}
                    @change=${(e: Event) => this.toggle(a.id, (e.target as HTMLInputElement).checked)} />
                  <span class="dot ${a.presence.status}" aria-hidden="true"></span>
                  <span class="name">${a.display_name}</span>
                  <span class="status">${STATUS_TEXT[a.presence.status] ?? a.presence.status}</span>
                </label>
              </li>`)}
          </ul>
          <footer>
            <span class="status" aria-live="polite">${names.length ? `Selected: ${names.join(", ")}` : "Pick one or more agents"}</span>
            <span>
              <button type="button" @click=${() => this.finish(null)}>Cancel</button>
              <button type="submit" class="primary" ?disabled=${this.chosen.size === 0}>Start</button>
            </span>
          </footer>
        </form>
      </dialog>`;
  }
}

/** The focused element, looking through shadow roots (to give focus back after the modal). */
function deepActiveElement(): Element | null {
  let el: Element | null = document.activeElement;
  while (el?.shadowRoot?.activeElement) el = el.shadowRoot.activeElement;
  return el;
}

declare global {
  interface HTMLElementTagNameMap {
    "im-agent-picker": AgentPicker;
  }
}
