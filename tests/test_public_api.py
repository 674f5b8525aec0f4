"""The package root is the public API: what it exports is pinned, and importing it is cheap."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import version

import pytest

import flarebus

PUBLIC = [
    "Action", "ActionError", "Exporter", "FlarebusError", "Frame", "MetricSample",
    "NatsSettings", "Plugin", "PluginError", "Publisher", "SampleError", "Sampler", "Sink",
    "StackSample", "Trigger", "TriggerGroup", "__version__", "connect",
]


def test_all_is_pinned() -> None:
    """`__all__` is exactly the documented public API; changing it is a deliberate act."""
    assert sorted(flarebus.__all__) == sorted(PUBLIC)


@pytest.mark.parametrize("name", [n for n in PUBLIC if n != "__version__"])
def test_every_public_name_resolves_to_its_defining_module(name: str) -> None:
    """Each name is the object of the module that defines it, not a copy."""
    value = getattr(flarebus, name)
    assert value.__module__.startswith("flarebus.")
    assert getattr(sys.modules[value.__module__], name) is value


def test_version_is_the_distributions() -> None:
    """`flarebus.__version__` is the version pip installed (pyproject reads it from here)."""
    assert flarebus.__version__ == version("flarebus")


def test_unknown_names_raise_attribute_error() -> None:
    """A typo is an AttributeError naming the module, as for any module."""
    with pytest.raises(AttributeError, match="module 'flarebus' has no attribute 'Actoin'"):
        _ = flarebus.Actoin  # type: ignore[attr-defined]


def test_importing_the_root_imports_no_role_and_no_heavy_dependency() -> None:
    """`import flarebus` in an application loads no role, no NATS client and no telemetry SDK."""
    code = ("import sys, json, flarebus; "
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('flarebus', 'nats', 'opentelemetry', 'msgspec', 'jsonschema', 'yaml'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert json.loads(out) == ["flarebus"]


def test_a_plugin_needs_only_the_root() -> None:
    """The plugin guide's imports work: an Action subclass typed with Trigger."""
    from flarebus import Action, Trigger

    class PageOncall(Action):
        name = "page_oncall"

        async def execute(self, trigger: Trigger) -> None:
            raise NotImplementedError

    assert PageOncall().kind == "action"
