"""The ``stack`` sampler: another Python process' stacks via ``py-spy record``.

flarebus cannot read another process' stacks itself; py-spy can, without
touching the target. Each window is one ``py-spy record --format raw`` run
(folded stacks), published as one StackSample; py-spy names frames
``function (file.py:line)``. Kept apart from the in-process profiler so that
``import flarebus.samplers.stack`` in a user's program loads none of this.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

from flarebus.errors import PluginError, SampleError
from flarebus.events import Stack, StackSample
from flarebus.sampler import Sample, Sampler
from flarebus.samplers.stack_profiler import DEFAULT_RATE

PY_SPY_MISSING = ("py-spy is not installed (or not on PATH), so flarebus cannot sample another "
                  "process' stacks: `pip install py-spy`, or give its path as config py_spy. "
                  "To profile your own Python program instead, add two lines to it: "
                  "`import flarebus.samplers.stack; flarebus.samplers.stack.start(source=\"app\", "
                  "nats=\"nats://...\")`.")


def find_py_spy(path: str | None = None) -> str:
    """The py-spy executable, or PluginError saying plainly that it is missing.

    Looked up on PATH, then beside this interpreter: `pip install py-spy` into
    a venv that is not activated puts it there, not on PATH.
    """
    name = path or os.environ.get("FLAREBUS_PY_SPY") or "py-spy"
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        raise PluginError("stack", PY_SPY_MISSING, source="sampler config")
    return found


def parse_raw(text: str) -> list[Stack]:
    """py-spy's ``--format raw`` (folded: ``root;...;leaf count``) as Stacks."""
    stacks = []
    for line in text.splitlines():
        frames, _, count = line.rstrip().rpartition(" ")
        if frames and count.replace(".", "", 1).isdigit() and float(count) > 0:
            stacks.append(Stack(frames.split(";"), float(count)))
    return stacks


class PySpySampler(Sampler):
    """``stack``: another Python process' stacks via ``py-spy record``, one StackSample a window."""

    name = "stack"
    default_interval = None  # a stream: py-spy records a window, we publish it, repeat
    config_schema: ClassVar[dict[str, Any]] = {
        "type": "object", "additionalProperties": False, "required": ["pid"],
        "properties": {
            "pid": {"type": "integer", "minimum": 1},
            "source": {"type": "string", "pattern": r"^[A-Za-z0-9_\-]+$"},
            "rate": {"type": "number", "exclusiveMinimum": 0},
            "window": {"type": "number", "minimum": 1,
                       "description": "seconds each py-spy run records (one StackSample)"},
            "threads": {"type": "boolean"},
            "idle": {"type": "boolean", "description": "include idle threads"},
            "py_spy": {"type": "string", "description": "path of the py-spy executable"},
        },
    }
    options = (
        ("--pid", "pid", int, "process id to sample"),
        ("--source", "source", str, "stack source name (default: pid-<PID>)"),
        ("--rate", "rate", float, "samples per second (default 100)"),
        ("--window", "window", float, "seconds per published StackSample (default 5)"),
    )

    executable: str | None = None

    async def init(self, config: dict[str, Any]) -> None:
        await super().init(config)
        self.source = self.config.get("source") or f"pid-{self.config['pid']}"
        self.executable = find_py_spy(self.config.get("py_spy"))

    def command(self, output: Path) -> list[str]:
        assert self.executable is not None
        argv = [self.executable, "record", "--pid", str(self.config["pid"]), "--format", "raw",
                "--rate", str(int(self.config.get("rate", DEFAULT_RATE))),
                "--duration", str(int(self.config.get("window", 5))),
                "--function", "--nonblocking", "--output", str(output)]
        if self.config.get("threads"):
            argv.append("--threads")
        if self.config.get("idle"):
            argv.append("--idle")
        return argv

    async def stream(self) -> AsyncIterator[Sequence[Sample]]:
        with tempfile.TemporaryDirectory(prefix="flarebus-pyspy-") as tmp:
            output = Path(tmp) / "stacks.txt"
            while True:
                proc = await asyncio.create_subprocess_exec(
                    *self.command(output), stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.PIPE)
                try:
                    _, err = await proc.communicate()
                finally:
                    if proc.returncode is None:
                        proc.kill()
                        await proc.wait()
                if proc.returncode != 0 or not output.exists():
                    message = err.decode(errors="replace").strip()[-500:]
                    raise SampleError(f"py-spy exited with {proc.returncode}: {message}")
                stacks = parse_raw(output.read_text())
                output.unlink()
                if stacks:
                    yield [StackSample(self.source, stacks, time.time(), "samples",
                                       {"pid": str(self.config["pid"])})]
