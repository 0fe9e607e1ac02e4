/** The console's web components and the one call a host page makes: `configure(...)`. */
export { configure, store, whenConfigured, type ClaimOutcome, type ConsoleConfig, type ConsoleStore, type Recipients } from "./store.js";
export { AgentPicker } from "./components/agent-picker.js";
export { AssistButton } from "./components/assist-button.js";
export { Console } from "./components/console.js";
export { Thread } from "./components/thread.js";
export { UnreadBadge } from "./components/unread-badge.js";
