"""docker-compose.yml: valid Compose, and its flarebus services' commands really work together.

There is no Docker engine on the build machines, so the file is checked in two
ways: against the Compose specification's JSON Schema (the one `check-jsonschema`
ships as ``vendor.compose-spec``), and by running each flarebus service's command
as a local process against a local nats-server, with the service's environment and
a stand-in for its container file system (every volume's container path linked to
its host path, named volumes as temp dirs), the nats address rewritten. The
commands run the console script of a non-editable install of the wheel (the
``installed`` fixture), which is what the image's ``pip install .`` gives.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from check_jsonschema.builtin_schemas import get_builtin_schema
from nats.js.errors import NotFoundError

from flarebus import bus
from flarebus.cli.main import COMMANDS
from flarebus.config import NatsSettings
from flarebus.events import trigger_decoder
from flarebus.nats_server import EmbeddedNats
from tests.installed import Installed
from tests.support import ROOT

COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE_NATS_URL = "nats://nats:4222"
FLAREBUS_SERVICES = {"engine", "worker", "sampler"}
HEARTBEAT_RULE = "flarebus-heartbeat"
#: variables of the developer's shell that would change what a service does
_LEAKY_ENV = re.compile(r"^(FLAREBUS_|OTEL_)|^(PYTHONPATH|PLUGIN_DIR|ACTION_PLUGIN|FILE_ACTION_DIR|"
                        r"FILE_ACTION_SIZE|HTTP_PLUGIN_ENDPOINT|FLAMEGRAPH_DIR)$")


def load_compose(path: Path = COMPOSE_FILE) -> dict[str, Any]:
    """The compose file as Compose sees it: YAML anchors and ``<<`` merge keys resolved."""
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), f"{path}: not a mapping"
    return data


def compose_problems(data: dict[str, Any]) -> list[str]:
    """Every violation of the Compose specification's schema, as ``path: message``."""
    schema = get_builtin_schema("vendor.compose-spec")
    cls = jsonschema.validators.validator_for(schema)
    errors = sorted(cls(schema).iter_errors(data), key=lambda e: list(e.absolute_path))
    return [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors]


def dockerfile_directive(name: str) -> str:
    """The argument of the Dockerfile's last ``name`` directive (the one that applies)."""
    found = [line.split(None, 1)[1].strip() for line in DOCKERFILE.read_text().splitlines()
             if line.upper().startswith(name + " ")]
    assert found, f"Dockerfile has no {name}"
    return found[-1]


def flarebus_services(compose: dict[str, Any],
                      profile: str | None = None) -> dict[str, dict[str, Any]]:
    """The services that run the flarebus image (built from this repository).

    ``profile`` None: those `docker compose up` starts (no profile); a name: that
    profile's; ``"*"``: all of them.
    """
    return {name: svc for name, svc in compose["services"].items()
            if ("build" in svc or str(svc.get("image", "")).startswith("flarebus"))
            and (profile == "*" or (profile in svc.get("profiles", []) if profile
                                    else not svc.get("profiles")))}


def service_command(svc: dict[str, Any]) -> list[str]:
    command = svc.get("command", [])
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def service_environment(svc: dict[str, Any]) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return {str(k): str(v) for k, v in env.items() if v is not None}


@dataclass
class Volume:
    source: str  # a host path (./deploy/...) or a named volume
    target: str  # the path in the container
    read_only: bool

    @property
    def is_bind(self) -> bool:
        return self.source.startswith((".", "/", "~"))


def service_volumes(svc: dict[str, Any]) -> list[Volume]:
    out = []
    for item in svc.get("volumes", []):
        if isinstance(item, dict):
            out.append(Volume(str(item.get("source", "")), item["target"],
                              bool(item.get("read_only", False))))
        else:
            source, target, *mode = str(item).split(":")
            out.append(Volume(source, target, "ro" in ",".join(mode).split(",")))
    return out


@dataclass
class Container:
    """A service's stand-in file system: a temp dir in which each volume is linked at its path."""

    root: Path
    named: dict[str, Path]
    volumes: list[Volume] = field(default_factory=list)

    def mount(self, volume: Volume) -> None:
        target = self.root / volume.target.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        if volume.is_bind:
            source = (COMPOSE_FILE.parent / volume.source).resolve()
            assert source.exists(), f"volume source {volume.source} does not exist"
        else:
            source = self.named[volume.source]
            source.mkdir(parents=True, exist_ok=True)
        target.symlink_to(source)
        self.volumes.append(volume)

    def path(self, container_path: str) -> Path:
        return self.root / container_path.lstrip("/")

    def rewrite(self, text: str, nats_url: str) -> str:
        """A container path that exists in the stand-in becomes its host path; nats' URL ours."""
        text = text.replace(COMPOSE_NATS_URL, nats_url)
        if text.startswith("/") and self.path(text).exists():
            return str(self.path(text))
        return text


def container_for(svc: dict[str, Any], root: Path, named: dict[str, Path]) -> Container:
    container = Container(root, named)
    for volume in service_volumes(svc):
        container.mount(volume)
    container.path(dockerfile_directive("WORKDIR")).mkdir(parents=True, exist_ok=True)
    return container


def local_argv(installed: Installed, svc: dict[str, Any], container: Container, nats_url: str,
               command: list[str] | None = None) -> list[str]:
    """The service's command (the image's entrypoint is `flarebus`) as a local process."""
    args = service_command(svc) if command is None else command
    return installed.flarebus(*(container.rewrite(a, nats_url) for a in args))


def local_env(svc: dict[str, Any], container: Container, nats_url: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not _LEAKY_ENV.search(k)}
    own = {k: container.rewrite(v, nats_url) for k, v in service_environment(svc).items()}
    return {**base, "PYTHONUNBUFFERED": "1", **own}


# --------------------------------------------------------------------------- the file itself


class TestComposeFile:
    def test_valid_against_the_compose_specification(self) -> None:
        """docker-compose.yml has no violation of the Compose specification's JSON Schema."""
        assert compose_problems(load_compose()) == []

    def test_check_jsonschema_command_accepts_it(self) -> None:
        """The command CI runs (`check-jsonschema --builtin-schema vendor.compose-spec`) passes."""
        exe = Path(sys.executable).parent / "check-jsonschema"
        result = subprocess.run([str(exe), "--builtin-schema", "vendor.compose-spec",
                                 str(COMPOSE_FILE)], capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stdout + result.stderr

    def test_schema_check_rejects_a_broken_file(self) -> None:
        """The schema check can fail: a misspelt service key and a bad dependency condition."""
        broken = copy.deepcopy(load_compose())
        broken["services"]["engine"]["comand"] = broken["services"]["engine"].pop("command")
        broken["services"]["worker"]["depends_on"] = {"nats": {"condition": "when-ready"}}
        problems = compose_problems(broken)
        assert any("services.engine" in p and "comand" in p for p in problems), problems
        assert any("services.worker.depends_on" in p for p in problems), problems

    def test_services_are_the_production_shape(self) -> None:
        """nats with JetStream, engine, worker, sampler, and the otel collector behind a profile."""
        services = load_compose()["services"]
        assert set(flarebus_services(load_compose())) == FLAREBUS_SERVICES
        assert "-js" in service_command(services["nats"])
        assert services["otel-collector"]["profiles"] == ["otel"]
        for name in (*FLAREBUS_SERVICES, "nats"):
            assert services[name].get("restart"), f"{name} has no restart policy"
        for name in ("nats", "engine", "worker"):
            assert services[name].get("healthcheck"), f"{name} has no health check"

    def test_commands_are_flarebus_subcommands(self) -> None:
        """The image's entrypoint is `flarebus` and each service runs one of its subcommands."""
        assert json.loads(dockerfile_directive("ENTRYPOINT")) == ["flarebus"]
        for name, svc in flarebus_services(load_compose(), "*").items():
            assert "entrypoint" not in svc, name
            assert service_command(svc)[0] in COMMANDS, name
            check = svc.get("healthcheck", {}).get("test", ["NONE"])
            if check[0] != "NONE":
                assert check[:2] == ["CMD", "flarebus"] and check[2] in COMMANDS, name

    def test_config_and_rules_are_mounted_read_only(self) -> None:
        """Every bind mount of this repository's files (config, rules, plugins) is read-only."""
        for name, svc in load_compose()["services"].items():
            for volume in service_volumes(svc):
                if volume.is_bind:
                    assert volume.read_only, f"{name}: {volume.source} is mounted read-write"
                    assert (ROOT / volume.source).exists(), f"{name}: {volume.source} missing"

    def test_every_flarebus_service_reaches_nats_through_the_compose_network(self) -> None:
        """Each flarebus service is told where nats is; the rewrite in the run test relies on it."""
        for name, svc in flarebus_services(load_compose()).items():
            assert service_environment(svc).get("FLAREBUS_NATS_URL") == COMPOSE_NATS_URL, name
            assert svc["depends_on"]["nats"]["condition"] == "service_healthy", name


# --------------------------------------------------------------------------- the commands, run


@dataclass
class Running:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture(scope="module")
def compose_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedNats]:
    """A nats-server of this module's own: the compose run must not see other tests' triggers."""
    with EmbeddedNats(tmp_path_factory.mktemp("compose-nats")) as server:
        yield server


def start_service(installed: Installed, name: str, svc: dict[str, Any], container: Container,
                  url: str, logs: Path, index: int = 0) -> Running:
    log = logs / f"{name}-{index}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(local_argv(installed, svc, container, url),
                                env=local_env(svc, container, url),
                                cwd=container.path(dockerfile_directive("WORKDIR")),
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    return Running(f"{name}-{index}", proc, log)


def report(running: list[Running]) -> str:
    return "\n".join(f"--- {r.name} (exit {r.proc.poll()}):\n{r.output()[-3000:]}"
                     for r in running)


def stop_all(running: list[Running]) -> dict[str, int | None]:
    for r in running:
        if r.proc.poll() is None:
            r.proc.send_signal(signal.SIGTERM)
    codes: dict[str, int | None] = {}
    for r in running:
        try:
            codes[r.name] = r.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            r.proc.kill()
            r.proc.wait()
            codes[r.name] = None
    return codes


@pytest.mark.timeout(90)
async def test_compose_services_run_together_as_processes(
        compose_nats: EmbeddedNats, installed: Installed, tmp_path: Path) -> None:
    """engine, two workers and sampler, as the compose file runs them: the heartbeat rule fires,
    its trigger is on JetStream, a worker runs its action, and SIGTERM stops each with exit 0."""
    url = compose_nats.url
    services = flarebus_services(load_compose())
    named = {name: tmp_path / "volumes" / name for name in load_compose().get("volumes", {})}
    logs = tmp_path / "logs"
    logs.mkdir()
    containers = {name: container_for(svc, tmp_path / "containers" / name, named)
                  for name, svc in services.items()}
    running: list[Running] = []
    try:
        for name, index in (("engine", 0), ("worker", 0), ("worker", 1), ("sampler", 0)):
            running.append(start_service(installed, name, services[name], containers[name], url,
                                         logs, index))
        workers = [r for r in running if r.name.startswith("worker")]

        nc = await bus.connect(NatsSettings(servers=[url], name="compose-test"))
        try:
            js = nc.jetstream()
            trigger = None
            deadline = time.monotonic() + 40
            while trigger is None:
                dead = [r for r in running if r.proc.poll() is not None]
                assert not dead, f"a service exited early\n{report(running)}"
                assert time.monotonic() < deadline, f"no heartbeat trigger\n{report(running)}"
                try:
                    msg = await js.get_last_msg("FLAREBUS_TRIGGERS",
                                                bus.trigger_subject(HEARTBEAT_RULE))
                    trigger = trigger_decoder.decode(msg.data)
                except NotFoundError:
                    await asyncio.sleep(0.5)
            assert trigger.state == "firing"
            assert trigger.metric_name == "flarebus.heartbeat"
            assert trigger.labels.get("env") == "compose"  # the sampler's -l env=compose

            line = f"rule={HEARTBEAT_RULE} state=firing"
            while not any(line in w.output() and trigger.id in w.output() for w in workers):
                assert time.monotonic() < deadline, f"no worker ran the action\n{report(running)}"
                await asyncio.sleep(0.2)
            assert all(r.proc.poll() is None for r in running), report(running)

            # the health checks the compose file declares pass against the running services
            for name in ("engine", "worker"):
                check = services[name]["healthcheck"]["test"][2:]  # after "CMD", "flarebus"
                result = subprocess.run(
                    local_argv(installed, services[name], containers[name], url, check),
                    env=local_env(services[name], containers[name], url),
                    cwd=containers[name].path(dockerfile_directive("WORKDIR")),
                    capture_output=True, text=True, timeout=30, check=False)
                assert result.returncode == 0, f"{name} health check: {result.stderr}"
                if name == "engine":
                    assert HEARTBEAT_RULE in result.stdout, result.stdout
        finally:
            await nc.close()
    finally:
        codes = stop_all(running)
    assert codes == {r.name: 0 for r in running}, report(running)
