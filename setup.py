"""Maps the repository's top-level folders into the one import namespace ``flarebus``.

The repository keeps each role in a folder at its top (``engine/``,
``actions/``, ``samplers/``, ``cli/``) beside the packaged ``rules/`` and
``schemas/``, so a reader finds each part at a glance, while everything
installs under ``flarebus``: flarebus code runs inside users' applications (the
stack sampler, plugins) and must never take a generic top-level name there.
``ROOTS`` is the whole mapping; the packages below each root are found by
walking it, so a new sub-package can never be left out of the wheel (the bug a
hand-written package list had). Everything else is in pyproject.toml.
"""

from setuptools import find_packages, setup

ROOTS = {
    "flarebus": "flarebus",
    "flarebus.cli": "cli",
    "flarebus.engine": "engine",
    "flarebus.actions": "actions",
    "flarebus.samplers": "samplers",
    "flarebus.web": "web",
    "flarebus.rules": "rules",
    "flarebus.schemas": "schemas",
}


def packages() -> list[str]:
    found = []
    for name, folder in ROOTS.items():
        found.append(name)
        found.extend(f"{name}.{sub}" for sub in find_packages(folder))
    return found


setup(package_dir=ROOTS, packages=packages())
