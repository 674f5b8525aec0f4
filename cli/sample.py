"""``flarebus sample``: run one sampler from flags, or every sampler of the config file.

``flarebus sample prometheus --url http://127.0.0.1:9100/metrics --interval 15s``
runs one; ``flarebus sample --config flarebus.yaml`` runs the file's ``samplers:``
section. Each sampler's flags fill its config (``--set KEY=VALUE`` sets any key,
the value read as YAML); ``-l KEY=VALUE`` adds labels. ``--print`` writes the samples
as JSON lines instead of publishing (no server needed); ``--once`` collects once.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from typing import TYPE_CHECKING, Any

from flarebus.cli.options import add_later, add_nats_options, interval, label, settings
from flarebus.errors import FlarebusError, PluginError

if TYPE_CHECKING:
    from flarebus.config import SamplerSettings
    from flarebus.plugin import SamplerPlugin
    from flarebus.registry import Registry
    from flarebus.samplers.runtime import SampleOutput


#: every sampler flag the parser knows (flag -> its type and help), filled by register()
_ALL_FLAGS: dict[str, tuple[type, str]] = {}


def _dest(flag: str) -> str:
    return "opt_" + flag.lstrip("-").replace("-", "_")


def _options(sampler: object) -> tuple[tuple[str, str, type, str], ...]:
    """A sampler's command-line flags (optional: a duck-typed sampler may have none)."""
    return getattr(sampler, "options", ())


def _metavar(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_").upper()  # --url URL, not --url OPT_URL


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "sample", help="run samplers (system, process, prometheus, stack, exec, stdin)",
        description=__doc__,
        epilog="examples:\n"
               "  flarebus sample system --interval 5s -l env=prod\n"
               "  flarebus sample prometheus --url http://127.0.0.1:9100/metrics --interval 15s\n"
               "  flarebus sample process --pid 1234\n"
               "  flarebus sample stack --pid 1234 --source api      (needs py-spy)\n"
               "  flarebus sample exec --command 'my-tool --json' --interval 30s\n"
               "  my-tool | flarebus sample stdin\n"
               "  flarebus sample --config flarebus.yaml             (its samplers: section)")
    parser.add_argument("--interval", type=interval, metavar="DURATION",
                        help="time between collections, e.g. 1s, 15s (default: the sampler's)")
    parser.add_argument("-l", "--label", metavar="KEY=VALUE", type=label, action="append",
                        default=[], help="label added to every sample (host, service, env, ...)")
    parser.add_argument("--set", metavar="KEY=VALUE", action="append", default=[],
                        help="any sampler config key (value parsed as YAML)")
    parser.add_argument("--print", action="store_true",
                        help="write samples to stdout as JSON lines instead of publishing")
    parser.add_argument("--once", action="store_true", help="collect once and exit")
    add_later(parser, _add_sampler_arguments)  # `flarebus --help` must not load the samplers
    parser.set_defaults(func=run)


def _add_sampler_arguments(parser: argparse.ArgumentParser) -> None:
    """SAMPLER and the built-in samplers' own flags: defining them imports the sampler classes."""
    from flarebus.registry import discover

    builtins = discover(use_entry_points=False)
    parser.add_argument("name", metavar="SAMPLER", nargs="?",
                        help=f"sampler to run ({', '.join(builtins.names('sampler'))}, or a "
                             "plugin); omitted: the config file's samplers")
    group = parser.add_argument_group("sampler options")
    owners: dict[str, list[str]] = {}  # a flag several samplers take lists them all
    for found in builtins.load("sampler"):
        for flag, _key, kind, text in _options(found.plugin):
            _ALL_FLAGS.setdefault(flag, (kind, text))
            owners.setdefault(flag, []).append(found.name)
    for flag, names in owners.items():
        kind, text = _ALL_FLAGS[flag]
        text = f"{text} [{', '.join(names)}]"
        if kind is bool:
            group.add_argument(flag, dest=_dest(flag), action="store_true", default=None,
                               help=text)
        elif kind is list:
            group.add_argument(flag, dest=_dest(flag), action="append",
                               metavar=_metavar(flag), help=text)
        else:
            group.add_argument(flag, dest=_dest(flag), type=kind, metavar=_metavar(flag),
                               help=text)
    add_nats_options(parser)


def spec_from_args(args: argparse.Namespace, registry: Registry) -> SamplerSettings:
    """The one sampler the flags describe; flags another sampler owns are an error."""
    import yaml

    from flarebus.config import SamplerSettings

    config: dict[str, Any] = {}
    owned = {flag: key for flag, key, _, _ in _options(registry.sampler(args.name))}
    for flag, key in owned.items():
        value = getattr(args, _dest(flag), None)
        if value is not None:
            config[key] = value
    foreign = [flag for flag in sorted(_ALL_FLAGS)
               if flag not in owned and getattr(args, _dest(flag), None) is not None]
    if foreign:
        raise PluginError(args.name, f"does not take {', '.join(foreign)}",
                          source="command line")
    for item in args.set:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise PluginError(args.name, f"--set {item!r}: use KEY=VALUE", source="command line")
        config[key] = yaml.safe_load(raw) if raw else ""
    return SamplerSettings(sampler=args.name, interval=args.interval,
                           labels=dict(args.label), config=config)


async def run(args: argparse.Namespace) -> int:
    import asyncio

    from flarebus import bus
    from flarebus.config import config_document
    from flarebus.publish import Publisher
    from flarebus.registry import discover
    from flarebus.samplers.runtime import PrintOutput, run_samplers
    from flarebus.stopping import Stopped, unless_stopped

    config = settings(args)
    labels = dict(args.label)
    registry = discover(config.worker.plugin_dir)
    config_doc = None
    if args.name:
        specs = [spec_from_args(args, registry)]
    else:
        if not config.samplers:
            raise FlarebusError("name a sampler (e.g. `flarebus sample system`) or give a "
                                "config file with a samplers: section")
        if args.interval is not None:
            for spec in config.samplers:
                spec.interval = spec.interval or args.interval
        specs = list(config.samplers)
        config_doc = config_document(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    nc = None
    output: SampleOutput = PrintOutput(sys.stdout.buffer)
    if not args.print:
        try:  # a signal while the server is still awaited ends it at once, exit 0
            nc = await unless_stopped(bus.connect(config.nats, retry_initial=not args.once),
                                      stop)
        except Stopped:
            return 0
        output = Publisher(nc, metrics_prefix=config.engine.metrics_prefix,
                           stacks_prefix=config.engine.stacks_prefix)
    try:
        if args.once:
            from flarebus.samplers.runtime import build_samplers

            return await _once(build_samplers(specs, registry, config_doc=config_doc), labels,
                               output)
        runner = await run_samplers(nc, specs, stop=stop, labels=labels, output=output,
                                    registry=registry, config_doc=config_doc)
    finally:
        if nc is not None:
            await bus.close(nc)
    for slot in runner.slots:
        print(f"sampler {slot.label}: {slot.stats.runs} collections, {slot.stats.samples} "
              f"samples, {slot.stats.failures} failures", file=sys.stderr)
    return 0


async def _once(samplers: list[tuple[SamplerPlugin, Any, SamplerSettings]],
                labels: dict[str, str], output: SampleOutput) -> int:
    """Collect each (built, validated) sampler once and send the samples to ``output``."""
    from flarebus.events import StackSample
    from flarebus.samplers.runtime import collect_once

    sent = 0
    for sampler, sampler_config, spec in samplers:
        for sample in await collect_once(sampler, sampler_config, {**labels, **spec.labels}):
            if isinstance(sample, StackSample):
                await output.send_stacks(sample)
            else:
                await output.send(sample)
            sent += 1
    await output.close()
    print(f"{sent} sample(s)", file=sys.stderr)
    return 0
