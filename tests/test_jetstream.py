"""The `jetstream:` settings: read from file and environment, and refused clearly when unmet.

The cluster's side (3 replicas placed, mismatches raised to 3) is in tests/test_cluster.py;
these run on one server, where a replicated stream cannot exist.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from nats.aio.client import Client
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import NotFoundError

from flarebus import bus, jetstream
from flarebus.config import JetStreamSettings, load_config
from flarebus.errors import ConfigError, Mismatch, StreamSettingsError
from flarebus.nats_server import EmbeddedNats
from tests.support import run_flarebus


class TestSettings:
    def test_defaults_are_one_replica_and_the_old_limits(self) -> None:
        """No jetstream: section gives what flarebus always used: R1, 7 days, 2m dedup."""
        js = load_config(env={}).jetstream
        assert (js.replicas, js.triggers_max_age, js.triggers_max_bytes,
                js.duplicate_window) == (1, 7 * 24 * 3600.0, -1, 120.0)

    def test_file_and_environment(self, tmp_path: Path) -> None:
        """`jetstream:` in the file, FLAREBUS_JETSTREAM_REPLICAS over it; durations in seconds."""
        path = tmp_path / "flarebus.yaml"
        path.write_text("jetstream:\n  replicas: 3\n  triggers_max_age: 2d\n"
                        "  duplicate_window: 5m\n")
        config = load_config(path, env={})
        assert (config.jetstream.replicas, config.jetstream.triggers_max_age,
                config.jetstream.duplicate_window) == (3, 172800.0, 300.0)
        assert load_config(path, env={"FLAREBUS_JETSTREAM_REPLICAS": "5"}).jetstream.replicas == 5

    def test_bad_values_are_named_where_they_are(self, tmp_path: Path) -> None:
        """replicas 0 in the file and `three` in the environment: each reported at its place."""
        path = tmp_path / "flarebus.yaml"
        path.write_text("jetstream:\n  replicas: 0\n")
        with pytest.raises(ConfigError) as caught:
            load_config(path, env={})
        assert str(caught.value.problems[0]).startswith(f"{path}:2:13: ")
        with pytest.raises(ConfigError, match="FLAREBUS_JETSTREAM_REPLICAS"):
            load_config(env={"FLAREBUS_JETSTREAM_REPLICAS": "three"})


class TestDifferences:
    def test_only_what_is_wanted_is_compared(self) -> None:
        """None means "whatever the server chose"; an unset limit reads as the server's -1/0."""
        from nats.js.api import StreamConfig
        existing = StreamConfig(name="S", num_replicas=1, max_age=None, max_bytes=-1)
        assert jetstream.differences(existing, {"num_replicas": 3, "max_age": 0.0,
                                                "max_bytes": None, "storage": None}) == [
            Mismatch("replicas", 1, 3)]

    def test_a_mismatch_reads_as_the_setting_and_both_values(self) -> None:
        """What the warning line and the error say."""
        assert str(Mismatch("replicas", 1, 3)) == "replicas is 1, wanted 3"


class TestRefused:
    async def test_three_replicas_on_one_server_is_a_clear_error(self, nc: Client) -> None:
        """The bucket is not created, and the error says what replicas 3 needs."""
        js = nc.jetstream()
        with pytest.raises(StreamSettingsError) as caught:
            await jetstream.bucket(js, JetStreamSettings(replicas=3), "TEST_R3_ALONE",
                                   description="test")
        assert caught.value.resource == "bucket TEST_R3_ALONE"
        assert "jetstream.replicas is 3: it needs a cluster of at least 3" in str(caught.value)
        with pytest.raises(NotFoundError):
            await js.stream_info("KV_TEST_R3_ALONE")

    async def test_a_difference_jetstream_cannot_change_is_an_error_naming_it(
            self, nc: Client, caplog: pytest.LogCaptureFixture) -> None:
        """A bucket in memory, wanted on file: reported, refused, and the bucket left as it was."""
        js = nc.jetstream()
        await js.create_key_value(KeyValueConfig(bucket="TEST_IN_MEMORY",
                                                 storage=StorageType.MEMORY))
        try:
            with caplog.at_level(logging.WARNING, "flarebus.jetstream"), \
                    pytest.raises(StreamSettingsError) as caught:
                await jetstream.bucket(js, JetStreamSettings(), "TEST_IN_MEMORY",
                                       description="test")
            assert caught.value.mismatches == [Mismatch("storage", "memory", "file")]
            assert str(caught.value).startswith(
                "bucket TEST_IN_MEMORY (storage is memory, wanted file): JetStream refused")
            assert [r.getMessage() for r in caplog.records] == [
                "bucket TEST_IN_MEMORY: storage is memory, wanted file; updating it"]
            info = await js.stream_info("KV_TEST_IN_MEMORY")
            assert info.config.storage == StorageType.MEMORY
        finally:
            await js.delete_key_value("TEST_IN_MEMORY")

    def test_a_worker_asked_for_three_replicas_on_one_server_exits_with_one_line(
            self, private_nats: EmbeddedNats) -> None:
        """`flarebus worker` with FLAREBUS_JETSTREAM_REPLICAS=3 on a lone server: exit 1, why."""
        result = run_flarebus("worker", "--nats", private_nats.url,
                              env={"FLAREBUS_JETSTREAM_REPLICAS": "3"}, timeout=60)
        assert result.returncode == 1, result.stderr
        lines = result.stderr.splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith(f"flarebus worker: stream {bus.TRIGGERS_STREAM}: JetStream "
                                   "refused to create it: "), lines[0]
        assert "jetstream.replicas is 3: it needs a cluster of at least 3" in lines[0]
