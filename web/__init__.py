"""The web console: what is firing, why, and the flamegraph behind it, in a browser.

Everything it shows is read from NATS (the engines' summaries in the state
bucket, the triggers stream with its dead letters, the finished-actions
bucket, the stacks subjects), so it runs anywhere NATS is reachable and keeps
no database. ``flarebus web`` runs it alone; ``flarebus up`` runs it beside
the roles. Pages are rendered on the server (Jinja2, autoescaped); a little
vanilla JavaScript (``static/``) refreshes them on server-sent events and
draws the interactive flamegraphs.
"""
