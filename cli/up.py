"""``flarebus up``: the whole product in one process, for a laptop or a demo.

Without ``--nats`` it starts the embedded nats-server (JetStream data in
``--data-dir``, default ``$FLAREBUS_DATA_DIR`` else ``./.flarebus``) and writes
its URL to ``nats.url`` there, so ``flarebus publish`` and ``flarebus tail`` in
another terminal find it without flags (given the same ``--data-dir`` or
``FLAREBUS_DATA_DIR`` when it is not the default). Then it runs the rules engine on the default
rule set (or ``--rules``), one action worker, and the ``system`` sampler (or
the config file's ``samplers:``), and serves the web console on
``--web-listen`` (default ``web.listen``, http://127.0.0.1:8090/; ``--no-web`` or
``web.enabled: false`` turns it off); with ``--engines N`` (default: one per core)
N-1 more coordinated engine processes share the series with the one here. It
prints a start-up summary, a line per trigger, and a status line every
``--status-every``. Ctrl-C stops every part
and the server; the next ``flarebus up`` in the same directory resumes from the
same data (checkpointed engine state included).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from flarebus.cli.options import (
    DATA_DIR_ENV,
    DEFAULT_DATA_DIR,
    URL_FILE_NAME,
    add_nats_options,
    data_dir,
    duration,
    positive_int,
    settings,
    signal_events,
)
from flarebus.durations import format_duration
from flarebus.partitions import PARTITIONS

if TYPE_CHECKING:  # what runs the roles is imported when `up` runs, not for `flarebus --help`
    import asyncio
    from collections.abc import Coroutine

    from flarebus.config import Config, SamplerSettings
    from flarebus.engine.service.engine import Engine
    from flarebus.events import Trigger
    from flarebus.nats_server import EmbeddedNats

log = logging.getLogger("flarebus.up")

DEFAULT_SAMPLER_INTERVAL = 5.0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "up", help="run everything in one process (embedded NATS unless --nats)",
        description=__doc__,
        epilog="examples:\n"
               "  flarebus up                         # embedded NATS, default rules\n"
               "  flarebus up --rules my-rules/       # your rules\n"
               "  flarebus up --nats nats://10.0.0.5:4222 --config flarebus.yaml\n"
               "then, in another terminal of the same directory:\n"
               "  flarebus publish cpu.usage 93.5 -l host=web-1\n"
               "  flarebus tail")
    parser.add_argument("--rules", metavar="PATH", action="append",
                        help="rule file or directory; repeatable (default: the packaged "
                             "rules/default.yaml)")
    parser.add_argument("--engines", type=positive_int, metavar="N",
                        help="coordinated engines: this process and N-1 child processes "
                             "(default: one per core; 1 with engine.shard set)")
    parser.add_argument("--no-sampler", action="store_true",
                        help="do not run the system sampler (publish your own samples)")
    parser.add_argument("--no-web", action="store_true",
                        help="do not serve the web console (also: web.enabled: false)")
    parser.add_argument("--web-listen", metavar="HOST:PORT",
                        help="the console's address (default: web.listen, 127.0.0.1:8090)")
    parser.add_argument("--status-every", type=duration, default="15s", metavar="DURATION",
                        help="how often to print the status line (default: 15s; 0 disables)")
    parser.add_argument("--json", action="store_true",
                        help="machine-readable output: JSON lines on stdout, JSON logs on stderr")
    add_nats_options(parser, data_dir_help="embedded server's JetStream data and URL file; "
                                           "give the others the same --data-dir")
    parser.set_defaults(func=run)


class Console:
    """What `up` says to a person (or, with --json, to a machine)."""

    def __init__(self, stream: TextIO, as_json: bool) -> None:
        self.stream = stream
        self.as_json = as_json

    def event(self, kind: str, text: str, **fields: Any) -> None:
        if self.as_json:
            line = json.dumps({"event": kind, "at": round(time.time(), 3), **fields},
                              default=str)
        else:
            line = f"{time.strftime('%H:%M:%S')} {text}"
        print(line, file=self.stream, flush=True)

    def trigger(self, trigger: Trigger) -> None:
        labels = ",".join(f"{k}={v}" for k, v in sorted(trigger.labels.items()))
        summary = trigger.annotations.get("summary", "")
        text = (f"{trigger.state.upper():<8} {trigger.rule} {{{labels}}} "
                f"{trigger.metric_name}={trigger.value:g} ({trigger.threshold} for "
                f"{format_duration(trigger.duration)})" + (f"  {summary}" if summary else ""))
        from flarebus.events import to_builtins

        self.event("trigger", text, trigger=to_builtins(trigger))


class JsonLogFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"at": round(record.created, 3), "level": record.levelname.lower(),
                 "logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


async def run(args: argparse.Namespace) -> int:
    import asyncio

    from flarebus.nats_server import EmbeddedNats

    console = Console(sys.stdout, args.json)
    if args.json:
        for handler in logging.getLogger().handlers:
            handler.setFormatter(JsonLogFormatter())
    status_every = args.status_every
    config = settings(args)
    server: EmbeddedNats | None = None
    args.data_dir = data_dir(args)
    url_file = args.data_dir / URL_FILE_NAME
    if not config.servers_given:  # nobody named a server (flag, environment, config file)
        server = EmbeddedNats(args.data_dir / "nats", partitioned=True)
        config.nats.servers = [await asyncio.to_thread(server.start)]
        url_file.write_text(config.nats.servers[0] + "\n")
    try:
        return await _run_roles(args, config, console, server, status_every)
    finally:
        if server is not None:
            url_file.unlink(missing_ok=True)
            await asyncio.to_thread(server.stop)
            console.event("stopped", "nats-server stopped")


def _reach_hint(where: Path) -> str:
    """How other commands find this server: the same directory, or the same data dir."""
    if where == DEFAULT_DATA_DIR:
        return "in this directory"
    return f"with --data-dir {where} (or {DATA_DIR_ENV}={where})"


async def _run_roles(args: argparse.Namespace, config: Config, console: Console,
                     server: EmbeddedNats | None, status_every: float) -> int:
    import asyncio

    from flarebus.config import SamplerSettings
    from flarebus.engine.service.lifecycle import running_engine
    from flarebus.rules import default_rules_file

    rules_paths = args.rules or config.engine.rules or [str(default_rules_file())]
    samplers = [] if args.no_sampler else (config.samplers or [
        SamplerSettings(sampler="system", interval=DEFAULT_SAMPLER_INTERVAL)])
    stop, reload = signal_events()

    engines = 1 if config.engine.shard else (args.engines or os.cpu_count() or 1)
    # the engine's one lifecycle (as `flarebus engine`): leaving the block stops it
    async with running_engine(config, rules_paths, stop=stop, reload=reload,
                              on_acked=console.trigger if engines == 1 else None) as engine:
        if engine is None:
            console.event("stopped", "stopped before the engine was ready (NATS not reachable)")
            return 0
        rules = engine.rules.rules
        more = _child_engines(args, config, rules_paths, engines, stop, reload)
        children = None if more is None else asyncio.create_task(more)
        if children is not None:  # announced once they share: no sample lost to a rebalance
            await _shared(engine, engines, stop)
        async with _web(args, config) as web_url:
            console.event(
                "started",
                "flarebus up\n"
                f"  nats      {', '.join(config.nats.servers)}"
                f"{' (embedded, data in ' + str(server.data_dir) + ')' if server else ''}\n"
                f"  rules     {len(rules)} from {', '.join(rules_paths)}\n"
                f"  engines   {_engines_text(engines)}\n"
                f"  samplers  {', '.join(s.sampler for s in samplers) or 'none'}\n"
                f"  worker    1 (concurrency {config.worker.concurrency}), plugins dir "
                f"{config.worker.plugin_dir or '-'}\n"
                f"  console   {web_url or 'off'}\n"
                "  Ctrl-C stops everything; `flarebus publish` / `flarebus tail` "
                f"{_reach_hint(args.data_dir)} reach this server",
                nats=config.nats.servers, embedded=server is not None,
                data_dir=str(server.data_dir) if server else None, rules=[r.name for r in rules],
                rule_files=rules_paths, samplers=[s.sampler for s in samplers], console=web_url)
            failed = await _beside(engine, config, console, samplers, stop, status_every,
                                   children)
    console.event("stopped", "engine, worker and samplers stopped")
    return 1 if failed else 0


@contextlib.asynccontextmanager
async def _web(args: argparse.Namespace, config: Config) -> AsyncIterator[str | None]:
    """The web console beside the roles, unless turned off; a taken port only warns
    (`up` is for a laptop: a second `up`, or another console, may hold 8090)."""
    if args.no_web or not config.web.enabled:
        yield None
        return
    from flarebus.errors import WebError
    from flarebus.web.server import running_console

    async with contextlib.AsyncExitStack() as stack:
        url = None
        try:
            url = await stack.enter_async_context(running_console(config,
                                                                  listen=args.web_listen))
        except WebError as exc:
            if args.web_listen:  # asked for by name: not serving it is an error
                raise
            log.warning("%s; the console is off (give --web-listen HOST:PORT)", exc)
        yield url


def _engines_text(engines: int) -> str:
    if engines == 1:
        return "1 (this process)"
    return f"{engines} (this process and {engines - 1} more, sharing 64 partitions)"


def _child_engines(args: argparse.Namespace, config: Config, rules_paths: list[str],
                   engines: int, stop: asyncio.Event, reload: asyncio.Event
                   ) -> Coroutine[Any, Any, int] | None:
    """The N-1 more engine processes of ``--engines N`` (None for one engine)."""
    if engines <= 1:
        return None
    from flarebus.cli.supervise import run_children

    argv = ["engine", "--nats", ",".join(config.nats.servers), "--rules", *rules_paths,
            *(["--config", args.config] if args.config else [])]
    return run_children(argv, engines - 1, stop=stop, reload=reload)


async def _beside(engine: Engine, config: Config, console: Console,
                  samplers: list[SamplerSettings], stop: asyncio.Event,
                  status_every: float,
                  children: asyncio.Task[int] | None = None) -> bool:
    """The worker, the samplers and the status line beside the ready engine, until Ctrl-C
    or a role's failure; True when one failed. Stops them all before returning."""
    import asyncio

    from flarebus import bus
    from flarebus.actions.service import run_worker
    from flarebus.config import config_document
    from flarebus.registry import discover
    from flarebus.samplers.runtime import run_samplers

    nc = await bus.connect(config.nats, retry_initial=True)
    registry = discover(config.worker.plugin_dir)  # one discovery: the worker's and samplers'
    tasks = {
        "worker": asyncio.create_task(run_worker(config, stop=stop, registry=registry)),
        "samplers": asyncio.create_task(run_samplers(
            nc, samplers, stop=stop, metrics_prefix=config.engine.metrics_prefix,
            stacks_prefix=config.engine.stacks_prefix, registry=registry,
            config_doc=config_document(config) if config.samplers else None)),
    }
    if children is not None:  # every engine's triggers, not only this one's
        tasks["engines"] = children
        await _print_triggers(nc, console)
    status = asyncio.create_task(_status_loop(engine, console, status_every))
    try:
        return await _wait(stop, tasks)
    finally:
        status.cancel()
        stop.set()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
        await bus.close(nc)


async def _shared(engine: Engine, engines: int, stop: asyncio.Event,
                  timeout: float = 60.0) -> None:
    """Until ``engines`` engines hold their shares of the partitions (or Ctrl-C, or timeout)."""
    import asyncio

    from flarebus.engine.service.coordinator import registry

    assert engine.coordinator is not None
    fair = PARTITIONS // engines
    deadline = time.monotonic() + timeout
    while not stop.is_set() and time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            infos, holders = await registry(engine.coordinator.kv)
            if len(infos) >= engines and len(holders) == PARTITIONS and \
                    all(len(i.partitions) >= fair for i in infos):
                return
        await asyncio.sleep(0.2)


async def _print_triggers(nc: Any, console: Console) -> None:
    """Print each trigger as it reaches the stream's subjects, whichever engine published it."""
    from flarebus import bus
    from flarebus.events import trigger_decoder

    seen: dict[str, None] = {}  # the ids printed lately: a retried publish is printed once

    async def on_msg(msg: Any) -> None:
        trigger = trigger_decoder.decode(msg.data)
        if trigger.id in seen:
            return
        seen[trigger.id] = None
        if len(seen) > 10_000:
            del seen[next(iter(seen))]
        console.trigger(trigger)

    await nc.subscribe(bus.TRIGGERS_FILTER, cb=on_msg)


async def _wait(stop: asyncio.Event, tasks: dict[str, asyncio.Task[Any]]) -> bool:
    """Until Ctrl-C, or until a role ends on its own (an error); True when one failed."""
    import asyncio

    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([stopper, *tasks.values()],
                                 return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    failed = False
    for name, task in tasks.items():
        if task in done and not stop.is_set():
            exc = task.exception()
            log.error("%s stopped unexpectedly: %s", name, exc or "ended")
            failed = failed or exc is not None
    return failed


async def _figures(engine: Engine) -> tuple[int, int, int, int, int]:
    """(samples received, series, pending, firing, triggers published) of every engine."""
    if engine.coordinator is not None and len(engine.coordinator.live) > 1:
        from flarebus.engine.service.coordinator import registry

        infos, _ = await registry(engine.coordinator.kv)
        return (sum(i.samples_received for i in infos), sum(i.series for i in infos),
                sum(i.pending for i in infos), sum(i.firing for i in infos),
                sum(i.triggers_published for i in infos))
    stats = engine.evaluator.stats()
    return (engine.stats.samples_received, stats.series, stats.pending, stats.firing,
            engine.stats.triggers_published)


async def _status_loop(engine: Engine, console: Console, every: float) -> None:
    """A status line every ``every`` seconds: the figures of all the engines `up` runs."""
    import asyncio

    if every <= 0:
        return
    last_samples, last_at = (await _figures(engine))[0], time.monotonic()
    while True:
        await asyncio.sleep(every)
        with contextlib.suppress(Exception):  # a status line must never take `up` down
            samples, series, pending, firing, published = await _figures(engine)
            now = time.monotonic()
            rate = (samples - last_samples) / max(now - last_at, 1e-9)
            last_samples, last_at = samples, now
            console.event(
                "status",
                f"status   {rate:,.1f} samples/s, {series} series, "
                f"{pending} pending, {firing} firing, {published} triggers published",
                samples_per_second=round(rate, 2), series=series, pending=pending,
                firing=firing, triggers_published=published)
