"""Fixtures: one real nats-server (JetStream on, temp store) per test session; no proxies."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from nats.aio.client import Client

from flarebus import bus
from flarebus.config import NatsSettings
from flarebus.nats_server import EmbeddedNats
from tests.cluster_support import NatsCluster
from tests.fleet import Fleet
from tests.installed import Installed, installed_flarebus

#: Proxy settings httpx (trust_env) and the CLI subprocesses would obey.
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


@pytest.fixture(scope="session", autouse=True)
def no_proxy_from_the_machine() -> Iterator[None]:
    """Tests talk to servers on loopback: a proxy set on the machine must not reroute them.

    The tests about proxies set their own, per test.
    """
    with pytest.MonkeyPatch.context() as patch:
        for name in PROXY_VARIABLES:
            patch.delenv(name, raising=False)
            patch.delenv(name.lower(), raising=False)
        yield


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedNats]:
    """The session's nats-server; tests that kill or restart a server start their own."""
    with EmbeddedNats(tmp_path_factory.mktemp("nats")) as server:
        yield server


@pytest.fixture(scope="session")
def nats_url(nats_server: EmbeddedNats) -> str:
    return nats_server.url


@pytest.fixture
def nats_settings(nats_url: str) -> NatsSettings:
    return NatsSettings(servers=[nats_url], name="flarebus-test")


@pytest.fixture
async def nc(nats_settings: NatsSettings) -> AsyncIterator[Client]:
    """A plain nats-py connection to the session's server."""
    client = await bus.connect(nats_settings)
    yield client
    await client.close()


@pytest.fixture(scope="module")
def private_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedNats]:
    """A server of the test module's own: worker tests purge streams and kill processes freely."""
    with EmbeddedNats(tmp_path_factory.mktemp("private-nats")) as server:
        yield server


@pytest.fixture
async def private_nc(private_nats: EmbeddedNats) -> AsyncIterator[Client]:
    """A plain nats-py connection to the module's private server."""
    client = await bus.connect(NatsSettings(servers=[private_nats.url], name="flarebus-test"))
    yield client
    await client.close()


@pytest.fixture(scope="module")
def nats_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    """A real 3-node JetStream cluster of the test module's own (tests/cluster_support.py).

    Tests may kill and restart its nodes; each must leave every node running
    (``cluster.restart(i)`` in a ``finally``) for the next test of the module.
    """
    with NatsCluster(tmp_path_factory.mktemp("nats-cluster")) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """flarebus installed from its wheel (not editable) in a venv of its own."""
    return installed_flarebus(tmp_path_factory.mktemp("installed"))


@pytest.fixture
def fleet(private_nats: EmbeddedNats, tmp_path: Path,
          request: pytest.FixtureRequest) -> Iterator[Fleet]:
    f = Fleet(private_nats.url, tmp_path, f"proc-{request.node.name[-20:].strip('_')}")
    yield f
    f.stop_all()
