"""A real 3-node NATS cluster with JetStream on loopback, for the tests of replication and failover.

Each node is an ``EmbeddedNats`` (the venv's nats-server, reaped with its owner)
with a server name, a cluster port and routes to the other nodes, and an HTTP
monitoring port: "ready" means what an operator would check, every running node's
``/healthz`` answering ok (JetStream current) and ``/jsz`` naming the same meta
leader for a cluster of ``size``. A node is killed with SIGKILL and restarted on
its own ports and store, so what it held must come back from its peers.

Use the ``nats_cluster`` fixture (tests/conftest.py, one cluster per test module);
connect with every URL (``cluster.urls`` or ``cluster.settings()``) so a client
fails over when its node dies::

    async def test_x(nats_cluster: NatsCluster) -> None:
        nc = await bus.connect(nats_cluster.settings())
        nats_cluster.kill(1)
        nats_cluster.restart(1)
"""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from flarebus.config import NatsSettings
from flarebus.nats_server import EmbeddedNats

HOST = "127.0.0.1"


def free_port() -> int:
    """A loopback port nobody listens on now (cluster and monitor ports must be known up front)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class NatsCluster:
    """``size`` nats-servers routed into one JetStream cluster; nodes killed, restarted by index."""

    def __init__(self, root: Path, size: int = 3, *, name: str = "flarebus-test",
                 ready_timeout: float = 60.0, names: Sequence[str] | None = None,
                 node_args: Callable[[NatsCluster, int], Sequence[str]] | None = None) -> None:
        """``node_args(cluster, i)``: node i's arguments besides the client port and store
        (which EmbeddedNats gives); by default its name, cluster and routes, and ``-m``."""
        self.root = root
        self.size = size
        self.name = name
        self.names = list(names or [f"{name}-{i}" for i in range(size)])
        self.ready_timeout = ready_timeout
        self.cluster_ports = [free_port() for _ in range(size)]
        self.monitor_ports = [free_port() for _ in range(size)]
        args = node_args or NatsCluster.default_args
        self.nodes = [EmbeddedNats(root / f"node-{i}", host=HOST, extra_args=tuple(args(self, i)))
                      for i in range(size)]

    def default_args(self, index: int) -> list[str]:
        routes = ",".join(f"nats://{HOST}:{p}" for p in self.cluster_ports)
        return ["--server_name", self.node_name(index), "--cluster_name", self.name,
                "--cluster", f"nats://{HOST}:{self.cluster_ports[index]}", "--routes", routes,
                "-m", str(self.monitor_ports[index])]

    def node_name(self, index: int) -> str:
        return self.names[index]

    # ------------------------------------------------------------------ where to connect

    @property
    def urls(self) -> list[str]:
        """Every node's client URL, in node order (stable across restarts)."""
        return [node.url for node in self.nodes]

    @property
    def url(self) -> str:
        """The URLs comma-separated, as ``--nats`` and ``FLAREBUS_NATS_URL`` take them."""
        return ",".join(self.urls)

    def settings(self, name: str = "flarebus-test") -> NatsSettings:
        return NatsSettings(servers=self.urls, name=name, reconnect_wait=0.2)

    # ------------------------------------------------------------------ life

    def start(self) -> NatsCluster:
        for node in self.nodes:
            node.start()
        self.wait_ready()
        return self

    def kill(self, index: int) -> None:
        """SIGKILL node ``index``: no shutdown, its store left as a crash leaves it."""
        self.nodes[index].kill()

    def restart(self, index: int) -> None:
        """Start node ``index`` again on its ports and store; return once the cluster is ready."""
        self.nodes[index].start()
        self.wait_ready()

    def running(self) -> list[int]:
        return [i for i, node in enumerate(self.nodes)
                if node.process is not None and node.process.poll() is None]

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> NatsCluster:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # ------------------------------------------------------------------ readiness

    def monitor(self, index: int, path: str) -> tuple[int, Any]:
        """GET a monitoring endpoint of node ``index``: (HTTP status, decoded JSON)."""
        url = f"http://{HOST}:{self.monitor_ports[index]}{path}"
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")
        except (OSError, ValueError):
            return 0, {}

    def serving(self, connection_name: str) -> int:
        """The node a client named ``connection_name`` (``--nats-name``) is connected to."""
        for i in self.running():
            _, connz = self.monitor(i, "/connz")
            if any(c.get("name") == connection_name for c in connz.get("connections") or []):
                return i
        raise AssertionError(f"no node has a connection named {connection_name!r}")

    def index_of(self, server_name: str) -> int:
        """The node index of a server name (``flarebus-test-2``: 2), as stream info names them."""
        return self.names.index(server_name)

    def meta_leader(self) -> str | None:
        """The JetStream meta leader every running node agrees on, or None."""
        leaders = set()
        for i in self.running():
            _, jsz = self.monitor(i, "/jsz")
            meta = jsz.get("meta_cluster") or {}
            if meta.get("cluster_size") != self.size:
                return None
            leaders.add(meta.get("leader"))
        return leaders.pop() if len(leaders) == 1 else None

    def problems(self) -> list[str]:
        """Why the cluster is not ready (empty when it is)."""
        out = [f"node {i}: healthz {status} {body}" for i in self.running()
               for status, body in [self.monitor(i, "/healthz")] if status != 200]
        if not out and self.meta_leader() is None:
            out.append("no JetStream meta leader all nodes agree on")
        return out

    def wait_ready(self) -> None:
        """Wait until every running node is healthy and they agree on a meta leader."""
        deadline = time.monotonic() + self.ready_timeout
        while problems := self.problems():
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- node {i}\n{node.log_tail(10)}"
                                 for i, node in enumerate(self.nodes))
                raise AssertionError(f"cluster not ready within {self.ready_timeout}s: "
                                     f"{problems}\n{logs}")
            time.sleep(0.1)
