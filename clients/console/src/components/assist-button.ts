/**
 * `<im-assist-button related-type="ticket|chat" related-id=… related-title=…>`: the Assistance
 * action a ticket or live chat page embeds. Pick agents or a team, and a chat window opens, tied to
 * the item by the Related tag at its top; the same agents with the same item open the same thread
 * again.
 */

import { css, html, nothing } from "lit";
import { customElement, property, query, state } from "lit/decorators.js";
import "./agent-picker.js";
import type { AgentPicker } from "./agent-picker.js";
import { shared, StoreElement } from "./base.js";
import "./thread.js";
import type { Thread } from "./thread.js";

@customElement("im-assist-button")
export class AssistButton extends StoreElement {
  static override styles = [shared, css`
    :host { display: inline-block; }
    .window {
      position: fixed; right: 16px; bottom: 16px; width: min(380px, calc(100vw - 32px)); height: min(520px, calc(100vh - 32px));
      display: flex; flex-direction: column; border: 1px solid var(--im-border); border-radius: 10px; background: var(--im-bg);
      box-shadow: 0 12px 40px rgba(0, 0, 0, 0.25); z-index: 1000;
    }
    .title { display: flex; align-items: center; justify-content: space-between; gap: 8px; padding: 8px 12px;
      background: var(--im-accent); color: var(--im-accent-text); border-radius: 10px 10px 0 0; }
    .title h2 { font-size: 14px; margin: 0; }
    .title button { background: transparent; color: inherit; border-color: rgba(255, 255, 255, 0.6); }
    im-thread { flex: 1; min-height: 0; }
  `];

  @property({ attribute: "related-type" }) relatedType: "ticket" | "chat" = "ticket";
  @property({ attribute: "related-id" }) relatedId = "";
  @property({ attribute: "related-title" }) relatedTitle = "";
  @state() private conversationId = "";
  @state() private busy = false;
  @query("im-agent-picker") private picker!: AgentPicker;
  @query("im-thread") private thread!: Thread;

  private async assist(): Promise<void> {
    if (!this.store || this.busy) return;
    const what = this.relatedType === "ticket" ? "ticket" : "live chat";
    const to = await this.picker.pickRecipients({ title: `Ask for assistance with this ${what}` });
    if (!to) return;
    this.busy = true;
    try {
      const c = await this.store.startConversation(to, {
        type: this.relatedType, id: this.relatedId, ...(this.relatedTitle ? { title: this.relatedTitle } : {}),
      });
      this.conversationId = c.id;
      await this.updateComplete;
      this.thread?.focusInput();
    } finally {
      this.busy = false;
    }
  }

  override render() {
    return html`
      <button class="primary assist" @click=${this.assist} ?disabled=${!this.store || this.busy} aria-haspopup="dialog">Assistance</button>
      <im-agent-picker></im-agent-picker>
      ${this.conversationId ? html`
        <section class="window" role="dialog" aria-label="Assistance chat">
          <div class="title">
            <h2>Assistance</h2>
            <button @click=${() => (this.conversationId = "")} aria-label="Close the assistance chat">Close</button>
          </div>
          <im-thread conversation-id=${this.conversationId}></im-thread>
        </section>` : nothing}`;
  }
}

declare global {
  interface HTMLElementTagNameMap {
    "im-assist-button": AssistButton;
  }
}
