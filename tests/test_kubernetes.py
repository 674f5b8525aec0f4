"""deploy/kubernetes/: valid manifests (kubernetes-validate's schemas, offline), whose commands,
mounts and ConfigMaps are what flarebus really runs, loads and checks.

There is no cluster on the build machines: each manifest is validated against the
Kubernetes API schemas that the kubernetes-validate package ships (strict: an unknown
key is an error), and what the pods would run is run here instead: the config
ConfigMap is loaded by flarebus' own loader, the rules ConfigMap is checked laid out
as the kubelet mounts a ConfigMap, the plugins ConfigMap is loaded as PLUGIN_DIR.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from flarebus import bus
from flarebus.cli.main import COMMANDS
from flarebus.config import WorkerSettings, load_config
from tests.support import ROOT, run_flarebus

DEPLOY = ROOT / "deploy" / "kubernetes"
K8S_VERSION = "1.30.0"
#: YAML files there that are not manifests, and why
NOT_MANIFESTS = {"nats-helm-values.yaml": "values for the official NATS Helm chart"}
#: custom resources kubernetes-validate has no schema for
CUSTOM_KINDS = {"ScaledObject": "a KEDA custom resource: kubernetes-validate ships only the "
                                "Kubernetes API's schemas (checked by TestKeda instead)"}


def documents() -> list[tuple[str, dict[str, Any]]]:
    """(file name, document) for every manifest document in deploy/kubernetes/."""
    out = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        if path.name not in NOT_MANIFESTS:
            out += [(path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return out


def resource(kind: str, name: str) -> dict[str, Any]:
    found = [d for _, d in documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def container(deployment: str) -> dict[str, Any]:
    containers = resource("Deployment", deployment)["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, deployment
    return containers[0]  # type: ignore[no-any-return]


def mounts(deployment: str) -> dict[str, tuple[str, str | None]]:
    """mountPath -> (ConfigMap name, subPath) of a Deployment's ConfigMap volumes."""
    spec = resource("Deployment", deployment)["spec"]["template"]["spec"]
    maps = {v["name"]: v["configMap"]["name"] for v in spec["volumes"] if "configMap" in v}
    return {m["mountPath"]: (maps[m["name"]], m.get("subPath"))
            for m in container(deployment)["volumeMounts"] if m["name"] in maps}


def configmap_volume(name: str, root: Path) -> Path:
    """The ConfigMap's files laid out as the kubelet mounts them (symlinks into ..data)."""
    stamp = root / "..2026_01_01_00_00_00.000000001"
    stamp.mkdir(parents=True)
    for key, text in resource("ConfigMap", name)["data"].items():
        (stamp / key).write_text(text)
        (root / key).symlink_to(f"..data/{key}")
    (root / "..data").symlink_to(stamp.name)
    return root


def validation_problems(doc: dict[str, Any]) -> list[str]:
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{'.'.join(map(str, exc.path))}: {exc.message}"]
    return []


class TestManifests:
    @pytest.mark.parametrize(("file", "doc"), documents(),
                             ids=[f"{f}:{d['kind']}" for f, d in documents()])
    def test_valid_against_the_kubernetes_api_schemas(self, file: str,
                                                      doc: dict[str, Any]) -> None:
        """Every manifest passes kubernetes-validate --strict (custom resources: see reason)."""
        if doc["kind"] in CUSTOM_KINDS:
            pytest.skip(CUSTOM_KINDS[doc["kind"]])
        assert validation_problems(doc) == [], file

    def test_the_validation_can_fail(self) -> None:
        """A misspelt container key and a string replica count are both rejected."""
        broken = copy.deepcopy(resource("Deployment", "flarebus-worker"))
        broken["spec"]["template"]["spec"]["containers"][0]["comand"] = ["x"]
        assert validation_problems(broken)
        broken = copy.deepcopy(resource("Deployment", "flarebus-worker"))
        broken["spec"]["replicas"] = "two"
        assert validation_problems(broken)

    def test_the_expected_resources_are_there(self) -> None:
        """Config, rules and plugins ConfigMaps, engine and worker Deployments, KEDA's example."""
        assert sorted((d["kind"], d["metadata"]["name"]) for _, d in documents()) == [
            ("ConfigMap", "flarebus-config"), ("ConfigMap", "flarebus-plugins"),
            ("ConfigMap", "flarebus-rules"), ("Deployment", "flarebus-engine"),
            ("Deployment", "flarebus-worker"), ("ScaledObject", "flarebus-worker")]


class TestPods:
    @pytest.mark.parametrize("role", ["engine", "worker"])
    def test_each_runs_its_role_and_probes_it(self, role: str) -> None:
        """args are `ROLE --config <the mounted config>`; every probe is `flarebus health ROLE`."""
        c = container(f"flarebus-{role}")
        assert c["args"][0] == role and role in COMMANDS
        config = c["args"][c["args"].index("--config") + 1]
        assert mounts(f"flarebus-{role}")[config] == ("flarebus-config", "flarebus.yaml")
        probes = [c[p] for p in ("startupProbe", "livenessProbe", "readinessProbe") if p in c]
        assert len(probes) >= 2, role
        for probe in probes:
            assert probe["exec"]["command"] == ["flarebus", "health", role, "--config", config]

    def test_the_engine_reads_the_rules_configmap(self) -> None:
        """--rules is the directory the rules ConfigMap is mounted at."""
        args = container("flarebus-engine")["args"]
        rules = args[args.index("--rules") + 1]
        assert mounts("flarebus-engine")[rules] == ("flarebus-rules", None)

    def test_the_workers_plugin_dir_is_the_plugins_configmap(self) -> None:
        """PLUGIN_DIR (and worker.plugin_dir in the config) is where the plugins are mounted."""
        env = {e["name"]: e["value"] for e in container("flarebus-worker")["env"]}
        assert mounts("flarebus-worker")[env["PLUGIN_DIR"]] == ("flarebus-plugins", None)


class TestConfigMaps:
    def test_the_config_loads_with_three_servers_and_three_replicas(self, tmp_path: Path) -> None:
        """flarebus' loader accepts the file: every NATS node listed, 3 replicas."""
        volume = configmap_volume("flarebus-config", tmp_path / "config")
        config = load_config(volume / "flarebus.yaml", env={})
        assert len(config.nats.servers) == 3 and config.jetstream.replicas == 3
        assert config.worker.plugin_dir == \
            {e["name"]: e["value"] for e in container("flarebus-worker")["env"]}["PLUGIN_DIR"]

    def test_the_rules_pass_flarebus_check_as_mounted(self, tmp_path: Path) -> None:
        """`flarebus check` on the directory as the kubelet lays it out: valid, each rule once."""
        volume = configmap_volume("flarebus-rules", tmp_path / "rules")
        result = run_flarebus("check", str(volume))
        assert result.returncode == 0, result.stdout + result.stderr
        rules = yaml.safe_load(resource("ConfigMap", "flarebus-rules")["data"]["default.yaml"])
        assert f"ok: {len(rules['rules'])} rules ({len(rules['rules'])} enabled) in 1 file" \
            in result.stdout, result.stdout

    def test_the_plugins_load_from_the_mounted_dir(self, tmp_path: Path) -> None:
        """`flarebus plugins --plugin-dir` finds every plugin file of the ConfigMap."""
        volume = configmap_volume("flarebus-plugins", tmp_path / "plugins")
        result = run_flarebus("plugins", "--plugin-dir", str(volume))
        assert result.returncode == 0, result.stdout + result.stderr
        assert "stdout_json" in result.stdout, result.stdout


class TestKeda:
    def test_the_scaledobject_scales_the_workers_on_their_consumer(self) -> None:
        """Its target is the worker Deployment; its stream and consumer are the workers' own."""
        scaled = resource("ScaledObject", "flarebus-worker")
        assert scaled["apiVersion"] == "keda.sh/v1alpha1"
        assert scaled["spec"]["scaleTargetRef"]["name"] == "flarebus-worker"
        [trigger] = scaled["spec"]["triggers"]
        assert trigger["type"] == "nats-jetstream"
        meta = trigger["metadata"]
        assert (meta["stream"], meta["consumer"]) == (bus.TRIGGERS_STREAM,
                                                      WorkerSettings().consumer)
        assert all(isinstance(v, str) for v in meta.values()), "KEDA metadata values are strings"
