"""The built-in plugins: log, file, http, webhook, slack, nats, flamegraph (see the registry)."""
