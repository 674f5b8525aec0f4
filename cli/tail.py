"""``flarebus tail``: print triggers as the engine publishes them.

Reads the JetStream stream FLAREBUS_TRIGGERS with an ephemeral ordered
consumer (nothing is acknowledged, workers are not disturbed). By default
only new triggers are shown; ``--since 10m`` or ``--all`` replays history
first. One readable line per trigger, or ``--json`` for one JSON object per
line (the wire format, for scripts and ``jq``).

Triggers the workers did not run (silenced, inhibited, rate-limited: their
record on ``triggers.suppressed.<rule>``) are shown too, as SILENCED,
INHIBITED or LIMITED with the reason; in ``--json`` as the trigger with a
``suppressed`` object (verdict, reason). ``--no-suppressed`` hides them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from typing import TYPE_CHECKING

from flarebus.cli.options import add_nats_options, duration, positive_int, settings, token

if TYPE_CHECKING:
    from nats.aio.msg import Msg

    from flarebus.events import Trigger


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "tail", help="print triggers live", description=__doc__,
        epilog="examples:\n"
               "  flarebus tail                        # new triggers, as they come\n"
               "  flarebus tail --since 1h --rule high-cpu\n"
               "  flarebus tail --all --json -n 10 | jq .labels")
    parser.add_argument("--rule", metavar="NAME", type=token, help="only this rule's triggers")
    parser.add_argument("--json", action="store_true", help="one JSON trigger per line")
    history = parser.add_mutually_exclusive_group()
    history.add_argument("--since", metavar="DURATION", type=duration,
                         help="first replay the triggers of this long ago (e.g. 10m)")
    history.add_argument("--all", action="store_true", help="first replay every stored trigger")
    parser.add_argument("--dead", action="store_true",
                        help="also show dead letters (triggers.dead.<rule>)")
    parser.add_argument("--no-suppressed", dest="suppressed", action="store_false",
                        help="hide what workers did not run (silenced, inhibited, "
                             "rate-limited)")
    parser.add_argument("-n", "--count", type=positive_int, metavar="N",
                        help="exit after N triggers")
    add_nats_options(parser)
    parser.set_defaults(func=run)


def format_trigger(trigger: Trigger) -> str:
    """One readable line: when, state, rule, series, value, and the summary annotation."""
    at = dt.datetime.fromtimestamp(trigger.at).isoformat(timespec="milliseconds")
    labels = ",".join(f"{k}={v}" for k, v in sorted(trigger.labels.items()))
    series = f"{trigger.metric_name}{{{labels}}}" if labels else trigger.metric_name
    line = (f"{at} {trigger.state.upper():8} {trigger.rule} [{trigger.severity}] {series} "
            f"value={trigger.value:g} {trigger.threshold} for {trigger.duration:g}s")
    summary = trigger.annotations.get("summary")
    return f"{line} - {summary}" if summary else line


def _subject(args: argparse.Namespace) -> str:
    from flarebus import bus

    if args.rule and not (args.dead or args.suppressed):
        return bus.trigger_subject(args.rule)
    return bus.TRIGGERS_SUBJECTS if args.dead or args.suppressed else bus.TRIGGERS_FILTER


def _wanted(args: argparse.Namespace, subject: str) -> bool:
    """Whether a message on ``subject`` (under ``triggers.>``) is one this tail shows."""
    from flarebus import bus

    if args.rule and subject.rsplit(".", 1)[-1] != args.rule:
        return False
    if subject.startswith(bus.DEAD_LETTER_PREFIX + "."):
        return bool(args.dead)
    if subject.startswith(bus.SUPPRESSED_PREFIX + "."):
        return bool(args.suppressed)
    return True


#: How a gate verdict reads in a line (flarebus.actions.gate's Flarebus-Verdict values).
VERDICT_WORDS = {"silenced": "SILENCED", "inhibited": "INHIBITED", "rate-limited": "LIMITED"}


def format_suppressed(trigger: Trigger, verdict: str, reason: str) -> str:
    """A trigger the workers did not run: its line with the verdict as its state, and why."""
    line = format_trigger(trigger).split(" ", 2)
    word = VERDICT_WORDS.get(verdict, verdict.upper())
    why = {"silenced": "silence", "inhibited": "by"}.get(verdict, "actions")
    return f"{line[0]} {word:9} {trigger.state} {line[2]}  [{why} {reason}]"


async def run(args: argparse.Namespace) -> int:
    import asyncio
    import json
    import signal

    from nats.js.api import ConsumerConfig, DeliverPolicy

    from flarebus import bus
    from flarebus.events import to_builtins, trigger_decoder

    config = settings(args)
    consumer = ConsumerConfig(deliver_policy=DeliverPolicy.NEW)
    if args.all:
        consumer = ConsumerConfig(deliver_policy=DeliverPolicy.ALL)
    elif args.since is not None:
        start = dt.datetime.fromtimestamp(time.time() - args.since, dt.UTC)
        consumer = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_TIME,
                                  opt_start_time=start)
    nc = await bus.connect(config.nats)
    js = await bus.ensure_jetstream(nc)
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    shown = 0

    async def show(msg: Msg) -> None:
        nonlocal shown
        if (args.count is not None and shown >= args.count) or not _wanted(args, msg.subject):
            return
        try:
            trigger = trigger_decoder.decode(msg.data)
        except Exception as exc:
            print(f"# undecodable message on {msg.subject}: {exc}", file=sys.stderr)
            return
        verdict = (msg.headers or {}).get(bus.VERDICT_HEADER) \
            if msg.subject.startswith(bus.SUPPRESSED_PREFIX + ".") else None
        reason = (msg.headers or {}).get(bus.REASON_HEADER, "")
        if args.json and verdict is not None:
            record = {**to_builtins(trigger), "suppressed": {"verdict": verdict,
                                                             "reason": reason}}
            sys.stdout.write(json.dumps(record) + "\n")
        elif args.json:
            sys.stdout.write(msg.data.decode() + "\n")
        elif verdict is not None:
            sys.stdout.write(format_suppressed(trigger, verdict, reason) + "\n")
        else:
            dead = " (dead letter)" if msg.subject.startswith(bus.DEAD_LETTER_PREFIX) else ""
            sys.stdout.write(format_trigger(trigger) + dead + "\n")
        sys.stdout.flush()
        shown += 1
        if args.count is not None and shown >= args.count:
            done.set()

    sub = await js.subscribe(_subject(args), cb=show, ordered_consumer=True, config=consumer)
    print(f"# tailing {_subject(args)} in {bus.TRIGGERS_STREAM}; Ctrl-C stops",
          file=sys.stderr, flush=True)
    try:
        await done.wait()
    finally:
        await sub.unsubscribe()
        await bus.close(nc)
    return 0
