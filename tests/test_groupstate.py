"""Grouping's pure parts: identities, the policy (rule over config), the state's transitions."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from flarebus.actions.groupstate import GroupState, add, claim, failed, new_group, notified
from flarebus.config import load_config
from flarebus.engine.language.rulefile import load_rules
from flarebus.events import ActionRef, GroupSpec, Trigger
from flarebus.grouping import (
    GroupPolicy,
    GroupSettings,
    fingerprint,
    group_key,
    group_labels,
    make_group,
    resolve_policy,
)
from tests.plugin_pkg.harness import trigger

POLICY = GroupPolicy(by=("host",), wait=30.0, interval=300.0, repeat=3600.0)


def resolved(t: Trigger, at: float | None = None) -> Trigger:
    """The resolution of ``t``."""
    return msgspec.structs.replace(t, id=t.id + "-r", state="resolved", at=at or t.at + 10)


def started(t: Trigger, now: float = 1000.0) -> GroupState:
    labels = group_labels(t, POLICY.by)
    state = new_group(t, POLICY, labels, group_key(labels), now)
    assert state is not None
    return state


# -- identities -----------------------------------------------------------------------


def test_fingerprint_is_alertmanagers() -> None:
    """The fingerprint is prometheus/common's LabelSet.Fingerprint (its own test vectors)."""
    assert int(fingerprint({}), 16) == 14695981039346656037
    assert int(fingerprint({"name": "garland, briggs", "fear": "love is not enough"}),
               16) == 5799056148416392346


def test_group_labels_and_key_are_the_rule_and_the_by_labels() -> None:
    """A group is named by alertname and the `by` labels it has, keyed as Alertmanager does."""
    t = trigger("high-cpu", labels={"host": "web-1", "core": "3"})
    labels = group_labels(t, ["host", "zone"])
    assert labels == {"alertname": "high-cpu", "host": "web-1"}
    assert group_key(labels) == '{}:{alertname="high-cpu", host="web-1"}'


# -- policy: rule over config ---------------------------------------------------------


def test_a_rule_without_group_is_ungrouped_unless_the_config_groups_every_rule() -> None:
    """No group: anywhere is today's behaviour; a config group: section groups every rule."""
    assert resolve_policy(None, None) is None
    config = GroupSettings(by=["host"], wait=5.0)
    assert resolve_policy(None, config) == GroupPolicy(("host",), 5.0, 300.0, 4 * 3600.0)
    assert resolve_policy(GroupSpec(enabled=False), config) is None


def test_the_rules_keys_win_over_the_configs_defaults() -> None:
    """Each key the rule sets wins; the others come from the config, then the defaults."""
    spec = GroupSpec(by=["zone"], interval=60.0)
    assert resolve_policy(spec, GroupSettings(wait=5.0, repeat=0.0)) == GroupPolicy(
        ("zone",), 5.0, 60.0, 0.0)
    assert resolve_policy(spec, None) == GroupPolicy(("zone",), 30.0, 60.0, 4 * 3600.0)


def test_rule_files_take_group_and_per_action_on(tmp_path: Path) -> None:
    """`group:` (a mapping or false) and `on:` reach the compiled rule, durations in seconds."""
    path = tmp_path / "r.yaml"
    path.write_text(
        "rules:\n"
        "  - {name: a, metric: cpu, when: '> 1', group: {by: [host], wait: 2s, interval: 1m},\n"
        "     actions: [{plugin: slack, on: [firing]}, log]}\n"
        "  - {name: b, metric: cpu, when: '> 1', group: false}\n")
    rules = load_rules([path]).rules
    assert rules[0].group == GroupSpec(by=["host"], wait=2.0, interval=60.0)
    assert rules[0].actions == (ActionRef(plugin="slack", on=["firing"]), ActionRef("log"))
    assert rules[1].group == GroupSpec(enabled=False)


def test_the_config_file_takes_a_group_section(tmp_path: Path) -> None:
    """`group:` in flarebus.yaml decodes, durations as seconds; a typo is named."""
    path = tmp_path / "flarebus.yaml"
    path.write_text("group:\n  by: [host]\n  wait: 10s\n  lease: 1m\n")
    assert load_config(path, env={}).group == GroupSettings(by=["host"], wait=10.0, lease=60.0)
    path.write_text("group:\n  wiat: 10s\n")
    with pytest.raises(Exception, match="wiat"):
        load_config(path, env={})


# -- the state's transitions ----------------------------------------------------------


def test_a_new_group_is_due_after_wait_then_after_interval_when_changed() -> None:
    """group_wait first; after a notification, a change waits out group_interval."""
    first = trigger(labels={"host": "a", "cpu": "0"})
    state = started(first)
    assert state.due() == 1000.0 + POLICY.wait
    assert claim(state, "w1", 1030.0, 10.0)
    sent = state.notification()
    assert notified(state, "w1", sent, 1031.0)
    assert state.due() == 1031.0 + POLICY.repeat  # unchanged and firing: repeat
    assert add(state, trigger(labels={"host": "a", "cpu": "1"}))
    assert state.due() == 1031.0 + POLICY.interval


def test_redeliveries_and_older_triggers_change_nothing() -> None:
    """The same trigger twice, or one older than the held one, leaves the group as it is."""
    t = trigger(labels={"host": "a"})
    state = started(t)
    assert not add(state, t)
    assert not add(state, msgspec.structs.replace(t, id="older", at=t.at - 5))


def test_a_resolution_is_sent_once_then_leaves_the_group() -> None:
    """A resolved alert is in the next notification, then gone; a lone resolution starts no
    group."""
    t = trigger(labels={"host": "a"})
    assert new_group(resolved(t), POLICY, {}, "k", 1.0) is None
    state = started(t)
    claim(state, "w1", 2000.0, 10.0)
    notified(state, "w1", state.notification(), 2000.0)
    assert add(state, resolved(t))
    claim(state, "w1", 3000.0, 10.0)
    group = state.notification()
    assert [x.state for x in group.alerts] == ["resolved"]
    notified(state, "w1", group, 3000.0)
    assert state.alerts == {}


def test_one_claim_wins_and_an_expired_lease_can_be_taken_over() -> None:
    """A live lease keeps others out; once it ends another worker claims, as a new try."""
    state = started(trigger(labels={"host": "a"}))
    assert claim(state, "w1", 1030.0, 10.0)
    assert not claim(state, "w2", 1035.0, 10.0)
    assert claim(state, "w2", 1041.0, 10.0)
    assert state.owner == "w2" and state.tries == 2
    assert not notified(state, "w1", state.notification(), 1042.0)  # w1 lost it
    assert failed(state, "w2", 1050.0) and state.due() == 1050.0


def test_a_change_during_a_notification_stays_for_the_next() -> None:
    """An alert updated while its notification ran is not marked sent."""
    t = trigger(labels={"host": "a"})
    state = started(t)
    claim(state, "w1", 1030.0, 10.0)
    sent = state.notification()
    add(state, resolved(t))
    notified(state, "w1", sent, 1031.0)
    assert state.changed()


def test_group_only_keeps_the_transitions_an_action_hears() -> None:
    """`on: [resolved]` sees only the resolved alerts; nothing to hear is None."""
    a, b = trigger(labels={"host": "a"}), trigger(labels={"host": "b"})
    group = make_group("high-cpu", "k", {}, [a, resolved(b)])
    only = group.only(["resolved"])
    assert only is not None and [t.labels["host"] for t in only.alerts] == ["b"]
    assert make_group("high-cpu", "k", {}, [a]).only(["resolved"]) is None


