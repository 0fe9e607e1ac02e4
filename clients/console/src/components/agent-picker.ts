/**
 * `<im-agent-picker>`: the modal every entry point uses to pick one or several agents — search by
 * name, online first, then away, then offline (offline agents can be picked: they find the thread
 * when they come back). A native <dialog>: focus stays inside, Escape closes, focus returns.
 * `pickRecipients` shows the tenant's teams above the agents (each with how many members are
 * online): a team is asked with a question, which its members read before one of them takes it.
 *
 *   const ids = await picker.pick({ title: "Ask for assistance" });   // null when cancelled
 *   const to = await picker.pickRecipients();   // {agentIds, teamIds, question} or null
 */

import { type ListedAgent, type Team } from "@helpdesk-im/client";
import type { Recipients } from "../store.js";
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
    .lists { overflow-y: auto; flex: 1; min-height: 120px; padding: 4px 8px; }
    ul { list-style: none; margin: 0; padding: 0; }
    h3 { margin: 8px 8px 2px; font-size: 12px; font-weight: 700; text-transform: uppercase; letter-spacing: 0.04em;
      color: var(--im-muted); }
    .team-mark { display: inline-flex; align-items: center; justify-content: center; width: 22px; height: 22px; flex: none;
      border-radius: 6px; background: #e7effc; color: #123d7a; font-size: 11px; font-weight: 700; }
    .question { padding: 8px 16px 0; border-top: 1px solid var(--im-border); display: grid; gap: 4px; }
    .question label { font-weight: 600; }
    .question textarea { font: inherit; padding: 8px 10px; border: 1px solid var(--im-border); border-radius: 6px;
      resize: vertical; min-height: 56px; }
    .hint { margin: 0; color: var(--im-muted); font-size: 12px; }
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
  @state() private teams: Team[] = [];
  @state() private chosen = new Set<string>();
  @state() private chosenTeams = new Set<string>();
  @state() private question = "";
  @state() private withTeams = false;
  @state() private heading = "New Instant Message";
  @state() private searching = false;
  @query("dialog") private dialog!: HTMLDialogElement;
  @query("input[type=search]") private search!: HTMLInputElement;
  private resolve: ((to: Recipients | null) => void) | null = null;
  private debounce: ReturnType<typeof setTimeout> | null = null;
  private opener: Element | null = null;
  private asked = 0;

  /** Opens the modal with agents only; resolves with the picked agent ids, or null when cancelled. */
  async pick(options: { title?: string } = {}): Promise<string[] | null> {
    return (await this.open(options.title, false))?.agentIds ?? null;
  }

  /** Opens the modal with teams and agents; resolves with what was picked, or null when cancelled. */
  pickRecipients(options: { title?: string } = {}): Promise<Recipients | null> {
    return this.open(options.title, true);
  }

  private async open(title: string | undefined, withTeams: boolean): Promise<Recipients | null> {
    this.heading = title ?? "New Instant Message";
    this.withTeams = withTeams;
    this.chosen = new Set();
    this.chosenTeams = new Set();
    this.question = "";
    this.teams = [];
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
      // Teams that fail to load leave the agents pickable: asking by name still works.
      const [agents, teams] = await Promise.all([this.store.agents(q),
        this.withTeams ? this.store.teams(q).catch(() => []) : Promise.resolve([])]);
      if (asked === this.asked) {
        this.agents = agents;
        this.teams = teams;
      }
    } finally {
      if (asked === this.asked) this.searching = false;
    }
  }

  private onSearch(): void {
    if (this.debounce) clearTimeout(this.debounce);
    this.debounce = setTimeout(() => void this.load(this.search.value.trim()), 200);
  }

  private toggle(set: "chosen" | "chosenTeams", id: string, on: boolean): void {
    const next = new Set(this[set]);
    if (on) next.add(id);
    else next.delete(id);
    this[set] = next;
  }

  /** A team is asked with a question: without one its members would have nothing to decide on. */
  private get ready(): boolean {
    return (this.chosen.size > 0 || this.chosenTeams.size > 0) && (this.chosenTeams.size === 0 || Boolean(this.question.trim()));
  }

  private finish(to: Recipients | null): void {
    if (this.dialog.open) this.dialog.close();
    this.resolve?.(to);
    this.resolve = null;
    (this.opener as HTMLElement | null)?.focus?.();
  }

  private submit(e: Event): void {
    e.preventDefault();
    if (!this.ready) return;
    this.finish({ agentIds: [...this.chosen], teamIds: [...this.chosenTeams],
      ...(this.chosenTeams.size ? { question: this.question.trim() } : {}) });
  }

  override render() {
    const names = [...this.teams.filter((t) => this.chosenTeams.has(t.id)).map((t) => t.name),
      ...this.agents.filter((a) => this.chosen.has(a.id)).map((a) => a.display_name)];
    const what = this.withTeams ? "agents or teams" : "agents";
    return html`
      <dialog aria-labelledby="picker-title" @cancel=${(e: Event) => { e.preventDefault(); this.finish(null); }}>
        <form method="dialog" @submit=${this.submit}>
          <header>
            <h2 id="picker-title">${this.heading}</h2>
            <label class="visually-hidden" for="q">Search ${what} by name</label>
            <input id="q" type="search" placeholder="Search ${what} by name" autocomplete="off"
              @input=${this.onSearch} aria-controls="recipients" />
          </header>
          <div class="lists" id="recipients" aria-busy=${this.searching ? "true" : "false"}>
          ${this.teams.length ? html`
            <h3 id="teams-heading">Teams</h3>
            <ul id="teams" aria-labelledby="teams-heading">
              ${this.teams.map((t) => html`
                <li>
                  <label>
                    <input type="checkbox" .checked=${this.chosenTeams.has(t.id)} data-team=${t.id}
                      @change=${(e: Event) => this.toggle("chosenTeams", t.id, (e.target as HTMLInputElement).checked)} />
                    <span class="team-mark" aria-hidden="true">${initials(t.name)}</span>
                    <span class="name">${t.name}</span>
                    <span class="status">${t.online_count} online${t.away_count ? ` · ${t.away_count} away` : ""}</span>
                  </label>
                </li>`)}
            </ul>
            <h3 id="agents-heading">Agents</h3>` : nothing}
          <ul id="agents" aria-label=${this.teams.length ? nothing : "Agents"}
            aria-labelledby=${this.teams.length ? "agents-heading" : nothing}>
            ${this.agents.length === 0 && !this.searching ? html`<li class="empty">No agent matches.</li>` : nothing}
            ${this.agents.map((a) => html`
              <li>
                <label>
                  <input type="checkbox" .checked=${this.chosen.has(a.id)} data-agent=${a.id}
                    @change=${(e: Event) => this.toggle("chosen", a.id, (e.target as HTMLInputElement).checked)} />
                  <span class="dot ${a.presence.status}" aria-hidden="true"></span>
                  <span class="name">${a.display_name}</span>
                  <span class="status">${STATUS_TEXT[a.presence.status] ?? a.presence.status}</span>
                </label>
              </li>`)}
          </ul>
          </div>
          ${this.chosenTeams.size ? html`
            <div class="question">
              <label for="question">Question for the team</label>
              <textarea id="question" rows="2" maxlength="10000" required aria-describedby="question-hint"
                .value=${this.question} @input=${(e: Event) => (this.question = (e.target as HTMLTextAreaElement).value)}></textarea>
              <p class="hint" id="question-hint">Its members read it before one of them takes the request.</p>
            </div>` : nothing}
          <footer>
            <span class="status" aria-live="polite">${names.length ? `Selected: ${names.join(", ")}` : `Pick one or more ${what}`}</span>
            <span>
              <button type="button" @click=${() => this.finish(null)}>Cancel</button>
              <button type="submit" class="primary" ?disabled=${!this.ready}>Start</button>
            </span>
          </footer>
        </form>
      </dialog>`;
  }
}

/** "Tier 2" → "T2": the team's mark beside its name. */
function initials(name: string): string {
  return name.split(/\s+/).filter(Boolean).slice(0, 2).map((w) => w[0]!.toUpperCase()).join("");
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
