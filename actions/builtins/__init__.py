"""The built-in plugins: log, file, http, webhook, slack, nats, flamegraph,
alertmanager (see the registry)."""
