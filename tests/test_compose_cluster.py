"""docker-compose.yml's `cluster` profile: three NATS nodes, and flarebus on all three of them.

As in tests/test_compose.py, there is no Docker engine here: the profile's nats
commands run as local nats-server processes (each container's ports 4222/6222/8222
and host name mapped to free loopback ports), and its flarebus services as local
processes of the installed wheel, with the service's own environment (the node URLs
rewritten) and health checks.
"""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path
from typing import Any

import pytest

from flarebus import bus
from tests.cluster_support import HOST, NatsCluster
from tests.installed import Installed
from tests.test_compose import (
    container_for,
    dockerfile_directive,
    flarebus_services,
    load_compose,
    local_argv,
    local_env,
    report,
    service_command,
    service_environment,
    start_service,
    stop_all,
)

PROFILE = "cluster"
NODES = ["nats-1", "nats-2", "nats-3"]
HA_SERVICES = {"engine-ha", "worker-ha"}
#: what EmbeddedNats gives every node itself (JetStream, a store of its own, the client port)
STORE_ARGS = ["-js", "-sd", "/data"]


def nodes() -> dict[str, dict[str, Any]]:
    return {name: load_compose()["services"][name] for name in NODES}


def client_urls(names: list[str]) -> str:
    return ",".join(f"nats://{n}:4222" for n in names)


def local_node_args(cluster: NatsCluster, index: int) -> list[str]:
    """Node ``index``'s compose command with the container's ports and hosts made local."""
    args = service_command(nodes()[NODES[index]])
    assert args[:3] == STORE_ARGS, args
    out = []
    for arg in args[3:]:
        if arg == "8222":
            arg = str(cluster.monitor_ports[index])
        elif arg == "nats://0.0.0.0:6222":
            arg = f"nats://{HOST}:{cluster.cluster_ports[index]}"
        for j, name in enumerate(NODES):
            arg = arg.replace(f"{name}:6222", f"{HOST}:{cluster.cluster_ports[j]}")
        out.append(arg)
    return out


class TestProfileFile:
    def test_three_jetstream_nodes_routed_to_each_other(self) -> None:
        """nats-1..3: the cluster profile, -js on /data, a name each, routes to all three."""
        for name, svc in nodes().items():
            command = service_command(svc)
            assert svc["profiles"] == [PROFILE], name
            assert command[:3] == STORE_ARGS, name
            assert command[command.index("--server_name") + 1] == name
            routes = command[command.index("--routes") + 1].split(",")
            assert routes == [f"nats://{n}:6222" for n in NODES], name
            assert svc["healthcheck"]["test"][-1].endswith("/healthz"), name
            assert any(v.endswith(":/data") for v in svc["volumes"]), name

    def test_flarebus_services_use_every_node_and_three_replicas(self) -> None:
        """engine-ha and worker-ha: all three URLs, FLAREBUS_JETSTREAM_REPLICAS=3, nodes healthy."""
        services = flarebus_services(load_compose(), PROFILE)
        assert set(services) == HA_SERVICES
        for name, svc in services.items():
            env = service_environment(svc)
            assert env["FLAREBUS_NATS_URL"] == client_urls(NODES), name
            assert env["FLAREBUS_JETSTREAM_REPLICAS"] == "3", name
            assert svc["depends_on"] == {n: {"condition": "service_healthy"} for n in NODES}
            assert svc["healthcheck"]["test"][:4] == ["CMD", "flarebus", "health",
                                                      name.removesuffix("-ha")], name


@pytest.mark.timeout(180)
async def test_the_cluster_profile_runs_as_processes(installed: Installed,
                                                     tmp_path: Path) -> None:
    """The three nodes' commands form a cluster; engine-ha and worker-ha on it pass their
    health checks, put the triggers stream and both buckets on 3 nodes, and exit 0 on SIGTERM."""
    with NatsCluster(tmp_path / "nats", names=NODES, name="flarebus",
                     node_args=local_node_args) as cluster:
        services = {name: copy.deepcopy(svc)
                    for name, svc in flarebus_services(load_compose(), PROFILE).items()}
        for svc in services.values():
            svc["environment"]["FLAREBUS_NATS_URL"] = cluster.url
        named = {name: tmp_path / "volumes" / name for name in load_compose()["volumes"]}
        logs = tmp_path / "logs"
        logs.mkdir()
        containers = {name: container_for(svc, tmp_path / "containers" / name, named)
                      for name, svc in services.items()}
        running = [start_service(installed, name, services[name], containers[name], cluster.url,
                                 logs) for name in sorted(HA_SERVICES)]
        try:
            nc = await bus.connect(cluster.settings())
            try:
                for name in sorted(HA_SERVICES):
                    await _wait_healthy(installed, name, services[name], containers[name],
                                        cluster.url, running)
                js = nc.jetstream()
                for stream in (bus.TRIGGERS_STREAM, f"KV_{bus.ENGINE_STATE_BUCKET}",
                               f"KV_{bus.ACTIONS_DONE_BUCKET}"):
                    info = await js.stream_info(stream)
                    assert info.config.num_replicas == 3, stream
                    assert info.cluster is not None and len(info.cluster.replicas or []) == 2
            finally:
                await nc.close()
        finally:
            codes = stop_all(running)
        assert codes == {r.name: 0 for r in running}, report(running)


async def _wait_healthy(installed: Installed, name: str, svc: dict[str, Any], container: Any,
                        url: str, running: list[Any]) -> None:
    """Run the service's compose health check until it passes (its log shown if it never does)."""
    from tests.plugin_pkg.harness import wait_until

    check = svc["healthcheck"]["test"][2:]  # after "CMD", "flarebus"

    def passes() -> bool:
        assert all(r.proc.poll() is None for r in running), report(running)
        result = subprocess.run(local_argv(installed, svc, container, url, check),
                                env=local_env(svc, container, url),
                                cwd=container.path(dockerfile_directive("WORKDIR")),
                                capture_output=True, text=True, timeout=30, check=False)
        return result.returncode == 0

    await wait_until(passes, 60, what=f"{name}'s health check passing")
