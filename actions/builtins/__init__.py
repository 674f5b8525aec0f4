"""The built-in plugins: log, file, http, webhook, slack, nats (see actions.registry.BUILTINS)."""
