"""``file``: the metric-reader file action, and a JSON-lines log of triggers.

``create`` mode (the seed's behaviour): each trigger creates a file of
``FILE_ACTION_SIZE`` bytes (default 1 MiB) in ``FILE_ACTION_DIR`` (default
``<tempdir>/metric-files``), named after the metric and the time. ``jsonl``
mode appends the trigger as one JSON line to ``jsonl_file`` in the same dir.

Metric names and labels come from whoever publishes samples, so every file
name is reduced to a safe single path component *and* the final path is
checked to be inside the directory: never a write outside it, whatever a
metric name or label holds (``../``, absolute paths, NUL, very long names).
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from pathlib import Path
from typing import Annotated, Literal

import msgspec

from flarebus.errors import ActionError
from flarebus.events import Trigger, encoder
from flarebus.grouping import TriggerGroup
from flarebus.plugin import Action

DEFAULT_SIZE = 1024 * 1024
MAX_NAME = 200
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_SIZE = re.compile(r"^\s*(\d+)\s*([kmg]i?b?|b)?\s*$", re.I)
_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2, "mb": 1000**2,
          "mib": 1024**2, "g": 1000**3, "gb": 1000**3, "gib": 1024**3, "ki": 1024,
          "mi": 1024**2, "gi": 1024**3}


def parse_size(text: str) -> int:
    """``1048576``, ``1MiB``, ``512k``: bytes. ValueError with the accepted forms otherwise."""
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"FILE_ACTION_SIZE={text!r} is not a size (use bytes, or 512KiB, 1MiB)")
    return int(match[1]) * _UNITS[(match[2] or "").lower()]


def default_dir() -> str:
    return os.environ.get("FILE_ACTION_DIR") or str(Path(tempfile.gettempdir()) / "metric-files")


def default_size() -> int:
    raw = os.environ.get("FILE_ACTION_SIZE")
    return parse_size(raw) if raw else DEFAULT_SIZE


def safe_component(text: str) -> str:
    """One harmless path component: unsafe runs become ``_``, no leading dot, bounded length."""
    cleaned = _UNSAFE.sub("_", text).lstrip(".") or "_"
    return cleaned[:MAX_NAME]


def inside(directory: Path, name: str) -> Path:
    """``directory/name`` resolved, or ActionError when it would leave ``directory``."""
    root = directory.resolve()
    target = (root / name).resolve()
    if target.parent != root:
        raise ActionError("file", f"refusing to write {name!r}: outside {root}", permanent=True)
    return target


class FileConfig(msgspec.Struct, forbid_unknown_fields=True):
    dir: str | None = None
    size: Annotated[int, msgspec.Meta(ge=0)] | None = None
    mode: Literal["create", "jsonl"] = "create"
    #: File name template (create mode); fields: metric_name, rule, state, time, labels[...].
    name: str = "{metric_name}_{time}"
    jsonl_file: str = "triggers.jsonl"


class FileAction(Action):
    """Writes files for triggers; ``execute`` is plain ``def`` on purpose: file I/O runs in the
    worker's thread pool."""

    name = "file"
    config_schema = FileConfig

    async def init(self, config: FileConfig) -> None:
        await super().init(config)
        self.dir = Path(config.dir or default_dir())
        self.size = config.size if config.size is not None else default_size()

    def validate_config(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if not os.access(self.dir, os.W_OK):
            raise ValueError(f"directory {self.dir} is not writable")
        if self.config.mode == "jsonl":
            inside(self.dir, safe_component(self.config.jsonl_file))

    def execute(self, trigger: Trigger) -> None:  # type: ignore[override]
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.config.mode == "jsonl":
            self.append(trigger)
        else:
            self.create(trigger)

    def execute_group(self, group: TriggerGroup) -> None:
        """One file (create mode) or one JSON line (jsonl) per group notification: the
        TriggerGroup as JSON; a create-mode name's fields are the group's (state: its
        status, labels: the group labels, time: its latest trigger's)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        latest = max(group.alerts, key=lambda t: t.at)
        data = encoder.encode(group) + b"\n"
        if self.config.mode == "jsonl":
            self.append_line(data)
        else:
            self.create_file(self.file_name(msgspec.structs.replace(
                latest, state=group.status, labels=group.labels)), data)

    def file_name(self, trigger: Trigger) -> str:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(trigger.at))
        stamp += f"{trigger.at % 1:.6f}"[1:] + "Z"
        fields = {"metric_name": trigger.metric_name, "rule": trigger.rule,
                  "state": trigger.state, "time": stamp, "labels": dict(trigger.labels)}
        try:
            rendered = self.config.name.format_map(fields)
        except (KeyError, IndexError, ValueError, AttributeError) as exc:
            raise ActionError("file", f"name template {self.config.name!r}: {exc!r}",
                              permanent=True) from None
        return safe_component(rendered)

    def create(self, trigger: Trigger) -> Path:
        """Create a new file of ``size`` bytes: the trigger JSON, then zero padding."""
        return self.create_file(self.file_name(trigger), encoder.encode(trigger) + b"\n")

    def create_file(self, base: str, header: bytes) -> Path:
        """A new file named ``base`` (or ``base.N``) of ``size`` bytes: header, then zeros."""
        payload = header[: self.size]
        for attempt in range(1000):
            name = base if attempt == 0 else f"{base[:MAX_NAME - 6]}.{attempt}"
            path = inside(self.dir, name)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(
                    os, "O_NOFOLLOW", 0), 0o644)
            except FileExistsError:
                continue
            with os.fdopen(fd, "wb") as handle:
                handle.write(payload)
                remaining = self.size - len(payload)
                chunk = bytes(min(remaining, 64 * 1024))
                while remaining > 0:
                    handle.write(chunk[:remaining])
                    remaining -= len(chunk)
            return path
        raise ActionError("file", f"no free file name for {base!r}")

    def append(self, trigger: Trigger) -> Path:
        return self.append_line(encoder.encode(trigger) + b"\n")

    def append_line(self, line: bytes) -> Path:
        path = inside(self.dir, safe_component(self.config.jsonl_file))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0),
                     0o644)
        with os.fdopen(fd, "ab") as handle:
            handle.write(line)
        return path
