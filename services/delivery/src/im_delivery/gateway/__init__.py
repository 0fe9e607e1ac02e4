"""The WebSocket gateway: authenticates, registers connections and sends from the agent queue."""
