"""``flarebus silence``: mute triggers for a while (add, list, expire).

A silence is a set of matchers on a trigger's labels plus ``rule`` (also
``alertname``) and ``severity``, and a time span. While it is active, a
trigger matching every matcher runs no action: workers record it on
``triggers.suppressed.<rule>`` (``flarebus tail`` shows it as SILENCED) and ack
it. Matchers are Alertmanager's: ``=``, ``!=``, ``=~`` and ``!~`` (regexes
match the whole value; an absent label is the empty string). Silences live in
the JetStream KV bucket FLAREBUS_SILENCES: every worker sees a new one at once
and they survive restarts; an expired one is listed (state ``expired``) for a
day.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import sys
import time
from typing import TYPE_CHECKING, Any

from flarebus.cli.options import add_nats_options, duration, settings

if TYPE_CHECKING:
    from flarebus.labelmatch import LabelMatcher
    from flarebus.silences import Silence


def matcher(text: str) -> LabelMatcher:
    """An argparse type: ``host=web-1``, ``rule!=x``, ``host=~"web-.*"``, ``host!~db-.*``."""
    from flarebus.labelmatch import parse_matcher

    try:
        return parse_matcher(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "silence", help="mute triggers for a while (add, list, expire)", description=__doc__,
        epilog="examples:\n"
               "  flarebus silence add -m host=web-1 -m rule=high-cpu --for 2h "
               "--comment 'disk swap'\n"
               "  flarebus silence add -m 'host=~\"db-.*\"' -m severity!=critical --for 30m\n"
               "  flarebus silence list                  # id, state, ends, matchers, comment\n"
               "  flarebus silence list --json | jq -r 'select(.state == \"active\") | .id'\n"
               "  flarebus silence expire 3f2c9a1e-...   # end it now")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    add = verbs.add_parser("add", help="add a silence; prints its id",
                           description="Add a silence; its id is printed (for expire).")
    add.add_argument("-m", "--matcher", dest="matchers", action="append", type=matcher,
                     required=True, metavar="MATCHER",
                     help="LABEL=VALUE, LABEL!=VALUE, LABEL=~REGEX or LABEL!~REGEX; repeat: "
                          "all must match (labels plus rule, alertname, severity)")
    add.add_argument("--for", dest="duration", type=duration, required=True,
                     metavar="DURATION", help="how long it lasts (e.g. 2h, 30m)")
    add.add_argument("--comment", default="", help="why (shown by list)")
    add.add_argument("--author", default=None, help="who (default: your login name)")
    listing = verbs.add_parser("list", help="list silences with their state",
                               description="List silences: active, pending and expired "
                                           "(expired ones are kept for a day).")
    listing.add_argument("--json", action="store_true", help="one JSON silence per line")
    expire = verbs.add_parser("expire", help="end a silence now",
                              description="End a silence now (its record stays, expired).")
    expire.add_argument("id", nargs="+", metavar="ID", help="silence id (from add or list)")
    for verb in (add, listing, expire):
        add_nats_options(verb)
        verb.set_defaults(func=run)


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts).isoformat(sep=" ", timespec="seconds")


def render(silences: list[Silence], now: float) -> str:
    """One line per silence: id, state, until when, matchers, comment."""
    if not silences:
        return "no silences\n"
    out = []
    for s in silences:
        matchers = " ".join(m.text for m in s.matchers)
        comment = f"  # {s.comment}" if s.comment else ""
        author = f" by {s.created_by}" if s.created_by else ""
        out.append(f"{s.id}  {s.state(now):8} until {_when(s.ends_at)}{author}  "
                   f"{matchers}{comment}")
    return "\n".join(out) + "\n"


def as_json(silence: Silence, now: float) -> dict[str, Any]:
    from flarebus.events import to_builtins

    return {**to_builtins(silence), "state": silence.state(now)}


async def run(args: argparse.Namespace) -> int:
    import json

    from flarebus import bus
    from flarebus.silences import (
        add_silence,
        expire_silence,
        list_silences,
        new_silence,
        silences_bucket,
    )

    config = settings(args)
    silence = None
    if args.verb == "add":  # refused before connecting: a bad silence needs no server
        silence = new_silence(args.matchers, args.duration, comment=args.comment,
                              created_by=args.author or _login())
    nc = await bus.connect(config.nats)
    try:
        kv = await silences_bucket(await bus.ensure_jetstream(nc))
        now = time.time()
        if silence is not None:
            print(await add_silence(kv, silence))
        elif args.verb == "list":
            found = await list_silences(kv, now=now)
            if args.json:
                for s in found:
                    print(json.dumps(as_json(s, now)))
            else:
                sys.stdout.write(render(found, now))
        else:
            for silence_id in args.id:
                expired = await expire_silence(kv, silence_id, now=now)
                print(f"expired {expired.id}")
    finally:
        await bus.close(nc)
    return 0


def _login() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name (a container without a passwd entry)
        return ""
