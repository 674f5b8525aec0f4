"""A signal while a role is still waiting for its NATS server ends it at once, exit 0."""

from __future__ import annotations

import signal

import pytest

from tests.support import start_flarebus
from tests.test_up import Output, family, stop


@pytest.mark.parametrize("role", [("worker",), ("sample", "system"),
                                  ("engine", "--rules", "rules/examples")],
                         ids=["worker", "sample", "engine"])
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_signal_while_waiting_for_nats(role: tuple[str, ...], signum: signal.Signals) -> None:
    """Retrying a dead URL, then SIGTERM or SIGINT: exit 0 (not 143 or 130), nothing left."""
    proc = start_flarebus(*role, "--nats", "nats://127.0.0.1:1")
    out = Output(proc)
    members = family(proc.pid)
    try:
        out.wait_for(r"retrying in", 30)
    finally:
        if signum == signal.SIGINT:
            code = stop(proc, members)
        else:
            proc.send_signal(signum)
            code = proc.wait(30)
    assert code == 0, out.text()
    assert "Traceback" not in out.text()
