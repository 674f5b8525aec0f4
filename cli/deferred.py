"""nats-py without the import of aiohttp it does not need, for the command line.

nats-py's transport module imports aiohttp when it is imported, for its
WebSocket transport alone; since the web console made aiohttp a dependency,
every command that connects to NATS paid for it: 120 of the 286 ms a
`flarebus publish` took end to end (bench/publish.py's start-up figures). The
``flarebus`` command installs a finder that loads ``nats.aio.transport`` with
aiohttp hidden and then gives it a stand-in that imports aiohttp at its first
use, so a ``ws://`` server still works and nothing else pays. (Python 3.11's
``LazyLoader`` does not do: the import statement reads the module's
``__spec__``, which loads it.) Only the command does this: a library must not
change how its users' programs import.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

TRANSPORT = "nats.aio.transport"


class OnFirstUse:
    """Stands for a module not imported yet: the first attribute read imports it."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attribute: str) -> Any:
        return getattr(importlib.import_module(self._name), attribute)


class _WithoutAiohttp(importlib.abc.Loader):
    """Runs the real loader with ``aiohttp`` unimportable, then hands it the stand-in."""

    def __init__(self, real: importlib.abc.Loader) -> None:
        self._real = real

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._real.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        hidden = "aiohttp" not in sys.modules
        if hidden:
            sys.modules["aiohttp"] = None  # type: ignore[assignment]  # import raises
        try:
            self._real.exec_module(module)
        finally:
            if hidden:
                del sys.modules["aiohttp"]
        if getattr(module, "aiohttp", True) is None:
            setattr(module, "aiohttp", OnFirstUse("aiohttp"))  # noqa: B010 (a module attribute)


class _TransportFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname != TRANSPORT:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _WithoutAiohttp(spec.loader)
                return spec
        return None


def defer_aiohttp() -> None:
    """From now on nats-py imports without aiohttp (no-op once its transport is imported)."""
    if TRANSPORT in sys.modules or any(isinstance(f, _TransportFinder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _TransportFinder())
