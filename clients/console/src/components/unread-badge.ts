/** `<im-unread-badge>`: the unread total for the host's navigation bar, live. */

import { html, nothing } from "lit";
import { customElement } from "lit/decorators.js";
import { shared, StoreElement } from "./base.js";

@customElement("im-unread-badge")
export class UnreadBadge extends StoreElement {
  static override styles = [shared];

  override render() {
    const total = this.store?.unreadTotal ?? 0;
    return total
      ? html`<span class="badge" role="status" aria-label="${total} unread instant messages">${total > 99 ? "99+" : total}</span>`
      : html`<span class="visually-hidden" role="status">No unread instant messages</span>${nothing}`;
  }
}

declare global {
  interface HTMLElementTagNameMap {
    "im-unread-badge": UnreadBadge;
  }
}
