"""``exec`` and ``stdin``: samples from JSON lines, for any tool that can print numbers.

A line may be

- a MetricSample: ``{"name": "queue.depth", "value": 12, "labels": {"queue": "mail"}}``
  (``ts`` optional), or a StackSample (``{"source": ..., "stacks": [...]}``);
- a bare number, when ``name`` is configured: ``12``;
- an object of numbers, when ``prefix`` is configured: ``{"depth": 12, "age": 3.5}``
  gives ``<prefix>.depth`` and ``<prefix>.age``.

A line that is none of these is logged with its number and skipped (counted in
``bad_lines``); the others still go out. ``exec`` runs ``command`` every interval
and reads its whole output (a non-zero exit is a failure, retried with backoff),
or with ``stream: true`` keeps it running and publishes each line as it comes
(restarted with backoff when it exits). ``stdin`` reads this process's stdin
until it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shlex
import sys
from collections.abc import AsyncIterator, Sequence
from typing import Any, ClassVar

import msgspec

from flarebus.errors import SampleError
from flarebus.events import MetricSample, StackSample, is_metric_name
from flarebus.lines import LineTooLong, line_queue
from flarebus.sampler import Sample, Sampler

log = logging.getLogger("flarebus.samplers")

_any = msgspec.json.Decoder()
_LINE_SCHEMA: dict[str, Any] = {
    "name": {"type": "string", "description": "metric name for lines that are bare numbers"},
    "prefix": {"type": "string", "description": "name prefix for lines that are objects"},
}


class LineParser:
    """Turns JSON lines into samples; remembers how many lines it could not use."""

    def __init__(self, name: str | None = None, prefix: str | None = None,
                 source: str = "<output>") -> None:
        self.name = name
        self.prefix = prefix
        self.source = source
        self.line = 0
        self.bad_lines = 0

    def parse(self, raw: bytes | str | LineTooLong) -> list[Sample]:
        """The samples of one line ([] for a blank or bad line, which is logged)."""
        self.line += 1
        if isinstance(raw, LineTooLong):
            self.bad_lines += 1
            log.warning("%s:%d: %s", self.source, self.line, raw.reason)
            return []
        if not raw.strip():
            return []
        try:
            return self._parse(raw)
        except (SampleError, msgspec.DecodeError, ValueError, TypeError,
                RecursionError) as exc:  # (the untyped decoder's answer to deep nesting)
            self.bad_lines += 1
            text = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
            log.warning("%s:%d: skipped (%s): %.200s", self.source, self.line, exc, text.strip())
            return []

    def _parse(self, raw: bytes | str) -> list[Sample]:
        data = _any.decode(raw)
        if isinstance(data, bool):
            raise SampleError("a boolean is not a sample")
        if isinstance(data, int | float):
            if self.name is None:
                raise SampleError("a bare number needs the sampler's `name` setting")
            return [msgspec.convert({"name": self.name, "value": data}, MetricSample)]
        if not isinstance(data, dict):
            raise SampleError("expected a JSON object or number")
        if "stacks" in data:
            return [msgspec.convert(data, StackSample)]
        if "name" in data and "value" in data:
            return [msgspec.convert(data, MetricSample)]
        if self.prefix is None:
            raise SampleError("an object needs `name` and `value` (or the sampler's `prefix`)")
        out: list[Sample] = []
        for key, value in data.items():
            name = f"{self.prefix}.{key}"
            if isinstance(value, int | float) and not isinstance(value, bool) \
                    and is_metric_name(name):
                out.append(msgspec.convert({"name": name, "value": value}, MetricSample))
        if not out:
            raise SampleError("no numeric fields with usable names")
        return out


def _argv(command: str | list[str]) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else list(command)


class ExecSampler(Sampler):
    name = "exec"
    default_interval: ClassVar[float | None] = 10.0  # None per instance with stream: true
    config_schema: ClassVar[dict[str, Any]] = {
        "type": "object", "additionalProperties": False, "required": ["command"],
        "properties": {
            "command": {"anyOf": [{"type": "string", "minLength": 1},
                                  {"type": "array", "minItems": 1, "items": {"type": "string"}}]},
            "stream": {"type": "boolean", "description": "keep it running, a sample per line"},
            **_LINE_SCHEMA,
        },
    }
    options = (
        ("--command", "command", str, "command whose stdout prints JSON lines"),
        ("--stream", "stream", bool, "keep the command running and read lines as they come"),
        ("--name", "name", str, "metric name for output lines that are bare numbers"),
        ("--prefix", "prefix", str, "metric name prefix for output lines that are objects"),
    )

    async def init(self, config: dict[str, Any]) -> None:
        await super().init(config)
        self.argv = _argv(self.config["command"])
        self.parser = LineParser(self.config.get("name"), self.config.get("prefix"),
                                 source=self.argv[0])
        if self.config.get("stream"):
            self.default_interval = None  # type: ignore[misc]  # per instance: a stream

    async def collect(self) -> Sequence[Sample]:
        proc = await asyncio.create_subprocess_exec(
            *self.argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            out, err = await proc.communicate()
        finally:
            if proc.returncode is None:  # cancelled (the interval's timeout): do not leak it
                proc.kill()
                await proc.wait()
        if proc.returncode != 0:
            tail = err.decode(errors="replace").strip()[-500:]
            raise SampleError(f"{self.argv[0]} exited with {proc.returncode}: {tail}")
        self.parser.line = 0
        return [s for line in out.splitlines() for s in self.parser.parse(line)]

    async def stream(self) -> AsyncIterator[Sequence[Sample]]:
        proc = await asyncio.create_subprocess_exec(*self.argv, stdout=asyncio.subprocess.PIPE)
        assert proc.stdout is not None
        self.parser.line = 0
        try:
            while line := await proc.stdout.readline():
                batch = self.parser.parse(line)
                if batch:
                    yield batch
            code = await proc.wait()
            raise SampleError(f"{self.argv[0]} exited with {code}")
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()


class StdinSampler(Sampler):
    name = "stdin"
    default_interval = None
    restart_on_end = False  # stdin that ended stays ended
    config_schema: ClassVar[dict[str, Any]] = {
        "type": "object", "additionalProperties": False, "properties": dict(_LINE_SCHEMA),
    }
    options = ExecSampler.options[2:]

    def __init__(self) -> None:
        self.input = sys.stdin.buffer

    async def init(self, config: dict[str, Any]) -> None:
        await super().init(config)
        self.parser = LineParser(self.config.get("name"), self.config.get("prefix"),
                                 source="<stdin>")

    async def stream(self) -> AsyncIterator[Sequence[Sample]]:
        lines = line_queue(self.input, 1000)
        while (raw := await lines.get()) is not None:
            batch = self.parser.parse(raw)
            if batch:
                yield batch
