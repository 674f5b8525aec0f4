"""``flarebus status``: the loaded rules and the pending and firing series, per engine.

Reads the summary each engine writes to the state bucket at every checkpoint
(``meta.engine.<i>-of-<N>``), so it works from anywhere that reaches NATS,
without asking the engines anything. A summary older than a few checkpoint
intervals means that engine is not running (or cannot reach NATS).

Engines started without ``--shard`` share 64 partitions through leases: for
those, the lease bucket's registry says which are alive (a dead one's entry
expires with its leases) and which partitions each holds; the first line says
how many of the 64 are held (fewer only while a dead engine's are taken over).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING

from flarebus.cli.options import add_nats_options, settings
from flarebus.durations import format_duration

if TYPE_CHECKING:
    from nats.js import JetStreamContext

    from flarebus.actions.gatestatus import WorkerSummary
    from flarebus.engine.service.leases import EngineInfo
    from flarebus.summary import EngineSummary

STALE_AFTER = 60.0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "status", help="rules and pending/firing series of running engines",
        description=__doc__,
        epilog="examples:\n"
               "  flarebus status                      # the `flarebus up` running here\n"
               "  flarebus status --nats nats://10.0.0.5:4222 --json | jq .firing\n"
               "exit code 1 while no engine has reported: usable as a health check")
    parser.add_argument("--json", action="store_true", help="print the summaries as JSON lines")
    add_nats_options(parser)
    parser.set_defaults(func=run)


def _age(seconds: float) -> str:
    return format_duration(max(0.0, round(seconds, 1)))


def _ranges(parts: list[int]) -> str:
    """[0, 1, 2, 5] -> "0-2,5": a partition list a person can read."""
    runs: list[list[int]] = []
    for p in sorted(parts):
        if runs and runs[-1][1] == p - 1:
            runs[-1][1] = p
        else:
            runs.append([p, p])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def render(summaries: list[EngineSummary], now: float,
           held: tuple[int, int] | None = None) -> str:
    """The human-readable report for these engine summaries (``held``: of, partitions)."""
    if not summaries:
        return "no engine has written a status yet (is `flarebus engine` running?)\n"
    out: list[str] = []
    if held is not None:
        live = sum(s.partitions is not None for s in summaries)
        out.append(f"coordinated engines: {live} live, {held[0]} of {held[1]} partitions held")
    for s in summaries:
        age = now - s.updated_at
        stale = f"  STALE: last update {_age(age)} ago" if age > STALE_AFTER else ""
        out.append(f"engine {s.shard} on {s.host} (pid {s.pid}), up {_age(now - s.started_at)}, "
                   f"updated {_age(age)} ago{stale}")
        if s.partitions is not None:
            out.append(f"  partitions: {len(s.partitions)} ({_ranges(s.partitions)})")
        enabled = [r for r in s.rules if r.enabled]
        out.append(f"  rules: {len(enabled)} enabled of {len(s.rules)} "
                   f"({', '.join(s.rule_files)})")
        for rule in s.rules:
            what = rule.metric or "stack"
            out.append(f"    {rule.name:24} {what}{'' if rule.enabled else '  (disabled)'}")
        out.append(f"  series: {s.series} tracked, {s.pending} pending, {s.firing} firing")
        out.extend(_input_lines(s.stats))
        for st in sorted(s.states, key=lambda x: (x.state != "firing", x.rule, x.series)):
            since = f" for {_age(now - st.since)}" if st.since is not None else ""
            value = f" value={st.value:g}" if st.value is not None else ""
            out.append(f"    {st.state.upper():8} {st.rule:24} {st.series}{since}{value}")
        if s.truncated:
            out.append("    ... (more not listed)")
    return "\n".join(out) + "\n"


def render_workers(workers: list[WorkerSummary], now: float) -> str:
    """What the workers' gates did: triggers silenced, inhibited, actions rate-limited."""
    if not workers:
        return ""
    out = [f"workers: {len(workers)} reporting"]
    for w in workers:
        counts = ", ".join(f"{verdict} {n}" for verdict, n in sorted(w.suppressed.items()))
        out.append(f"  worker on {w.host} (pid {w.pid}), up {_age(now - w.started_at)}: "
                   f"{counts or 'nothing suppressed'}; {w.silences} silence(s) known")
        for pair in w.rate_limited:
            out.append(f"    rate-limited {pair.rule}/{pair.action}: {pair.dropped} dropped")
    return "\n".join(out) + "\n"


def _counts(counts: object) -> str:
    if not isinstance(counts, dict) or not counts:
        return "none"
    return ", ".join(f"{key} {value}" for key, value in sorted(counts.items()))


def _input_lines(stats: dict[str, object]) -> list[str]:
    """What came in, what was refused, what was lost: the lines an operator must not miss."""
    dropped = stats.get("dropped")
    dropped = dropped if isinstance(dropped, dict) else {}
    lines = [f"  input: {stats.get('samples_received', 0)} samples in "
             f"{stats.get('messages_received', 0)} messages; rejected: "
             f"{_counts(stats.get('rejected'))}; dropped: {_counts(dropped)}"]
    refused = stats.get("series_refused")
    if refused:
        lines.append(f"  CARDINALITY LIMIT: samples of new series refused, by rule: "
                     f"{_counts(refused)} (engine.limits; tracked series keep working)")
    disconnects = {k: v for k, v in dropped.items() if k.endswith("disconnects") and v}
    if disconnects:
        lines.append(f"  INPUT LOST: {_counts(disconnects)} (input published while "
                     "disconnected is not received; see the engine's log)")
    return lines


async def run(args: argparse.Namespace) -> int:
    from flarebus import bus
    from flarebus.actions.gatestatus import summary_decoder as worker_decoder
    from flarebus.actions.gatestatus import workers_bucket
    from flarebus.engine.service.checkpoint import META_PREFIX, read_entries
    from flarebus.partitions import PARTITIONS
    from flarebus.summary import SUMMARY_PREFIX, summary_decoder, summary_encoder

    config = settings(args)
    nc = await bus.connect(config.nats)
    try:
        js = nc.jetstream()
        kv = await bus.engine_state_bucket(js)  # as it is: status is a reader
        raw = await read_entries(kv, META_PREFIX + SUMMARY_PREFIX)
        workers = [worker_decoder.decode(v) for v in
                   (await read_entries(await workers_bucket(js), "")).values()]
        engines, holders = await _registry(js)
    finally:
        await bus.close(nc)
    summaries = []
    for s in (summary_decoder.decode(v) for v in raw.values()):
        if "/" in s.shard:  # a static shard
            summaries.append(s)
        elif s.shard in engines:  # a live coordinated engine (a dead one's summary stays)
            s.partitions = engines[s.shard].partitions
            summaries.append(s)
    summaries.sort(key=lambda s: s.shard)
    if args.json:
        for s in summaries:
            sys.stdout.write(summary_encoder.encode(s).decode() + "\n")
    else:
        held = (len(holders), PARTITIONS) if engines else None
        sys.stdout.write(render(summaries, time.time(), held))
        sys.stdout.write(render_workers(sorted(workers, key=lambda w: (w.host, w.pid)),
                                        time.time()))
    return 0 if summaries else 1  # a health check must fail while no engine reports


async def _registry(js: JetStreamContext) -> tuple[dict[str, EngineInfo], dict[int, str]]:
    """Live coordinated engines by id and the partitions' holders; none without the bucket."""
    from nats.js.errors import BucketNotFoundError, NotFoundError

    from flarebus import bus
    from flarebus.engine.service.coordinator import registry

    try:
        kv = await js.key_value(bus.ENGINE_LEASES_BUCKET)
    except (BucketNotFoundError, NotFoundError):
        return {}, {}
    engines, holders = await registry(kv)
    return {e.id: e for e in engines}, holders
