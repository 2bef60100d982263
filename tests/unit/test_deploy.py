"""deploy/ checked without a container engine: schemas, Dockerfile rules, the bot image's deps."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path
from typing import Any

import pytest
import yaml
from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
BIN = Path(sys.executable).parent


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return data


def _k8s_docs() -> list[dict[str, Any]]:
    """The manifests as kustomize renders them (or the listed files when kubectl is absent)."""
    kubectl = shutil.which("kubectl")
    if kubectl is not None:
        out = subprocess.run(
            [kubectl, "kustomize", str(K8S)], check=True, capture_output=True, text=True
        ).stdout
        return [d for d in yaml.safe_load_all(out) if d]
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    docs: list[dict[str, Any]] = []
    for name in kustomization["resources"]:
        docs += [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]
    return docs


def _by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in _k8s_docs() if d["kind"] == kind}


def _exported_metric_names() -> set[str]:
    """Every metric family name reelbot serves (collectors' names included)."""
    from reelbot import metrics

    names = {m.name for m in metrics.REGISTRY.collect()}
    # Collectors registered by the processes that ask (metrics.serve) are read from the source.
    for module in ("metrics.py", "store/readings.py"):
        source = (ROOT / "src" / "reelbot" / module).read_text()
        names |= set(re.findall(r'GaugeMetricFamily\(\s*"([a-z_]+)"', source))
    return names


# -- compose ---------------------------------------------------------------------------------


def test_compose_validates_against_the_compose_spec() -> None:
    checker = BIN / "check-jsonschema"
    result = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.compose-spec", str(DEPLOY / "compose.yaml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_runs_a_durable_redis_a_gpu_worker_and_every_adapter() -> None:
    services = _compose()["services"]
    redis = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in redis and "--appendfsync everysec" in redis
    assert "--requirepass" in redis
    assert any(v.endswith(":/data") for v in services["redis"]["volumes"])
    worker = services["worker"]
    [device] = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert worker["stop_grace_period"]
    for name in ("discord", "telegram", "web"):
        assert services[name]["command"] == [name]
        assert services[name]["build"]["dockerfile"] == "deploy/Dockerfile.bot"
    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["monitoring"]
    for name, service in services.items():
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), f"{name}: pin {image}"
    targets = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    scraped = targets["scrape_configs"][0]["static_configs"][0]["targets"]
    workers = {"worker", "worker-image", "worker-video"}
    assert {t.split(":")[0] for t in scraped} == workers | {"web", "discord", "telegram"}


def test_compose_offers_image_and_video_pools_each_on_its_own_gpu_and_queue() -> None:
    services = _compose()["services"]
    assert services["worker"]["command"] == ["worker"]  # one GPU: both queues, by affinity
    gpus = set()
    for kind in ("image", "video"):
        pool = services[f"worker-{kind}"]
        assert pool["profiles"] == ["pools"]
        assert pool["command"] == ["worker", "--queue", f"reelbot:{kind}"]
        assert pool["healthcheck"]["test"][-2:] == ["--queue", f"reelbot:{kind}"]
        [device] = pool["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
        gpus.add(device["device_ids"][0])
        assert pool["image"] == services["worker"]["image"]
        assert pool["stop_grace_period"] and pool["volumes"] == services["worker"]["volumes"]
    assert len(gpus) == 2, "the pools must not share a card by default"


def test_the_dashboard_graphs_metrics_that_exist() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "reelbot.json").read_text())
    titles = " ".join(p["title"] for p in dashboard["panels"]).lower()
    for wanted in ("queue depth", "wait time", "run time", "failures by code", "gpu memory"):
        assert wanted in titles
    names = _exported_metric_names()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            used = set(re.findall(r"reelbot_[a-z_]+", target["expr"]))
            base = {re.sub(r"_(bucket|count|sum|total)$", "", u) for u in used}
            assert base <= names, f"{panel['title']}: {base - names} is not exported"


# -- kubernetes ------------------------------------------------------------------------------


def test_manifests_validate_against_the_kubernetes_schemas() -> None:
    import kubernetes_validate

    for doc in _k8s_docs():
        if doc["apiVersion"].startswith("keda.sh/"):
            continue  # a CRD: checked by hand below
        kubernetes_validate.validate(doc, "1.33.0", strict=True)


POOLS = {"reelbot-worker-image": "reelbot:image", "reelbot-worker-video": "reelbot:video"}


def test_gpu_workers_request_a_gpu_probe_health_and_stop_gracefully() -> None:
    deployments = _by_kind("Deployment")
    for name, queue in POOLS.items():
        worker = deployments[name]["spec"]["template"]["spec"]
        assert worker["terminationGracePeriodSeconds"] >= 120
        [container] = worker["containers"]
        assert container["args"] == ["worker", "--queue", queue]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            command = container[probe]["exec"]["command"]
            assert command[:3] == ["reelbot", "health", "--worker"], probe
            # A pool's pod serves one queue: a probe asking for both would never pass.
            assert command[-2:] == ["--queue", queue], probe
        assert worker["securityContext"]["runAsNonRoot"] is True
    # The metrics Service reaches the pods of both pools.
    [service] = [s for s in _by_kind("Service").values() if "worker" in s["metadata"]["name"]]
    selector = service["spec"]["selector"].items()
    for name in POOLS:
        labels = deployments[name]["spec"]["template"]["metadata"]["labels"]
        assert selector <= labels.items()
    for name in ("reelbot-discord", "reelbot-telegram", "reelbot-web"):
        spec = _by_kind("Deployment")[name]["spec"]["template"]["spec"]
        [adapter] = spec["containers"]
        assert adapter["livenessProbe"]["exec"]["command"] == ["reelbot", "health"]
        assert "nvidia.com/gpu" not in adapter["resources"].get("limits", {})
    assert _by_kind("StatefulSet")["redis"]["spec"]["volumeClaimTemplates"]


def test_keda_scales_each_pool_on_its_own_queue_depth() -> None:
    objects = _by_kind("ScaledObject")
    assert set(objects) == set(POOLS)
    for name, queue in POOLS.items():
        scaled = objects[name]
        assert scaled["apiVersion"] == "keda.sh/v1alpha1"
        spec = scaled["spec"]
        assert spec["scaleTargetRef"]["name"] == name
        assert name in _by_kind("Deployment")
        assert 0 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
        [trigger] = spec["triggers"]
        assert trigger["type"] == "prometheus"
        query = trigger["metadata"]["query"]
        assert "reelbot_queue_depth" in query
        assert re.findall(r'queue="([^"]+)"', query) == [queue], query
        float(trigger["metadata"]["threshold"])
    assert "reelbot_queue_depth" in _exported_metric_names()


# -- Dockerfiles -----------------------------------------------------------------------------


def _lint(path: Path) -> list[str]:
    """A few hadolint-style rules (hadolint itself is not on PyPI)."""
    # fileobj: given a path, the parser takes a file not named "Dockerfile" for a directory.
    parser = DockerfileParser(fileobj=io.BytesIO(path.read_bytes()))
    problems: list[str] = []
    args = {
        i["value"].split("=", 1)[0]: i["value"].split("=", 1)[1]
        for i in parser.structure
        if i["instruction"] == "ARG" and "=" in i["value"]
    }
    stages = [i for i in parser.structure if i["instruction"] == "FROM"]
    for stage in stages:
        image = stage["value"].split()[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), image)
        if "@sha256:" not in image and not re.search(r":[^:]*\d", image):
            problems.append(f"line {stage['startline'] + 1}: pin {image} by version or digest")
        if image.endswith(":latest"):
            problems.append(f"line {stage['startline'] + 1}: never :latest")
    last_from = stages[-1]["startline"]
    final = [i for i in parser.structure if i["startline"] >= last_from]
    users = [i["value"] for i in final if i["instruction"] == "USER"]
    if not users or users[-1].split(":")[0] in ("root", "0"):
        problems.append("the final stage must switch to a non-root USER")
    for i in parser.structure:
        value, where = i["value"], f"line {i['startline'] + 1}"
        if i["instruction"] == "ADD":
            problems.append(f"{where}: use COPY (ADD fetches URLs and unpacks archives)")
        if i["instruction"] == "RUN":
            if "apt-get install" in value and "--no-install-recommends" not in value:
                problems.append(f"{where}: apt-get install --no-install-recommends")
            if re.search(r"pip install(?! --dry-run)", value) and "--no-cache-dir" not in value:
                problems.append(f"{where}: pip install --no-cache-dir")
            if re.search(r"(^|\s)cd\s", value):
                problems.append(f"{where}: use WORKDIR, not cd")
        if i["instruction"] in ("CMD", "ENTRYPOINT") and not value.startswith("["):
            problems.append(f"{where}: {i['instruction']} in exec form, so signals reach reelbot")
    if not any(i["instruction"] == "HEALTHCHECK" for i in final):
        problems.append("no HEALTHCHECK")
    return problems


@pytest.mark.parametrize("name", ["Dockerfile.bot", "Dockerfile.worker"])
def test_dockerfiles_lint(name: str) -> None:
    assert _lint(DEPLOY / name) == []


def test_the_lint_catches_what_it_claims(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nADD . /src\nRUN cd /src && pip install .\nCMD reelbot web\n")
    found = " ".join(_lint(bad))
    for rule in ("pin python", "use COPY", "--no-cache-dir", "WORKDIR", "exec form", "USER"):
        assert rule in found


def test_the_bot_image_is_multi_stage_and_torch_free() -> None:
    text = (DEPLOY / "Dockerfile.bot").read_text()
    assert text.count("\nFROM ") + text.startswith("FROM ") >= 2
    assert "COPY --from=build" in text
    assert "torch" not in re.sub(r"#.*", "", text).replace("find_spec('torch')", "")
    assert "[discord,telegram]" in text and "worker" not in re.sub(r"#.*", "", text)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_the_bot_dependency_set_resolves_in_a_clean_venv_without_torch(tmp_path: Path) -> None:
    """What Dockerfile.bot installs, resolved by pip in an empty venv (a dry run: no download
    of wheels it would not need to inspect)."""
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    report = tmp_path / "report.json"
    result = subprocess.run(
        [
            str(env_dir / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--quiet",
            "--disable-pip-version-check",
            "--report",
            str(report),
            f"{ROOT}[discord,telegram]",
        ],
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    if result.returncode != 0 and re.search(
        r"(?i)network|connection|resolve host|no matching distribution", result.stderr
    ):
        pytest.skip(f"no package index reachable: {result.stderr.strip().splitlines()[-1]}")
    assert result.returncode == 0, result.stderr
    installed = {
        item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"]
    }
    assert {"reelbot", "discord-py", "python-telegram-bot", "prometheus-client"} <= {
        n.replace(".", "-").replace("_", "-") for n in installed
    }
    heavy = {"torch", "diffusers", "transformers", "accelerate", "onnxruntime", "nvidia-cudnn-cu12"}
    assert not installed & heavy, installed & heavy
