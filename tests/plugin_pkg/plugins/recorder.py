"""A PLUGIN_DIR plugin for the process tests: records start/end of each run to $RECORD_FILE.

One JSON line per event, written with a single O_APPEND write so lines from several
worker processes never interleave. The trigger's ``sleep`` label makes a run take that long.
"""

from __future__ import annotations

import asyncio
import json
import os

from flarebus import Action, Trigger


def record(event: str, trigger: Trigger) -> None:
    line = json.dumps({"event": event, "id": trigger.id, "pid": os.getpid()}) + "\n"
    fd = os.open(os.environ["RECORD_FILE"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


class Recorder(Action):
    name = "recorder"

    async def execute(self, trigger: Trigger) -> None:
        record("start", trigger)
        await asyncio.sleep(float(trigger.labels.get("sleep", "0")))
        record("end", trigger)


plugin = Recorder()
