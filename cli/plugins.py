"""``flarebus plugins``: what plugins were found, from where, and of which kind.

Discovery order: entry points (group ``flarebus.plugins``), ``.py`` files in
``PLUGIN_DIR``, the built-ins; every kind (action, sink, sampler, exporter).
Broken plugin files and name clashes are listed too (exit code 1 when there
are any), so this is the command to run when a worker or ``flarebus sample``
refuses to start. Unlike the other commands it imports every built-in, so a
broken one is listed too.
"""

from __future__ import annotations

import argparse
import sys

from flarebus.cli.options import add_config_option


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("plugins", help="list discovered plugins (name, kind, source)",
                            description=__doc__,
                            epilog="examples:\n  flarebus plugins --plugin-dir plugins/\n"
                                   "  flarebus plugins --json --traceback")
    add_config_option(parser)
    parser.add_argument("--plugin-dir", metavar="DIR",
                        help="directory of .py plugin files (default: $PLUGIN_DIR)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--traceback", action="store_true",
                        help="print the traceback of each broken plugin")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging

    from flarebus.config import load_config
    from flarebus.events import encoder
    from flarebus.registry import discover

    logging.getLogger("flarebus.plugins").setLevel(logging.CRITICAL)  # listed below instead

    config = load_config(args.config, overrides={"worker": {"plugin_dir": args.plugin_dir}})
    registry = discover(config.worker.plugin_dir)
    registry.load()
    found = sorted(registry, key=lambda f: f.name)
    if args.json:
        for f in found:
            enabled = config.plugins[f.name].enabled if f.name in config.plugins else True
            print(encoder.encode({"name": f.name, "kind": f.kind, "origin": f.origin,
                                  "source": f.source, "enabled": enabled}).decode())
    else:
        width = max([len(f.name) for f in found] + [4])
        print(f"{'NAME':<{width}}  {'KIND':<8}  {'FROM':<11}  SOURCE")
        for f in found:
            disabled = "" if config.plugins.get(f.name) is None or \
                config.plugins[f.name].enabled else "  (disabled)"
            print(f"{f.name:<{width}}  {f.kind:<8}  {f.origin:<11}  {f.source}{disabled}")
    for broken in registry.broken:
        print(f"broken: {broken.source}: {broken.error}", file=sys.stderr)
        if args.traceback and broken.traceback:
            print(broken.traceback, file=sys.stderr)
    for clash in registry.clashes:
        print(f"clash: {clash}", file=sys.stderr)
    return 1 if registry.broken or registry.clashes else 0
