"""The deployment files of docker/ (docs/deployment.md): schema validation
(scripts/validate_deploy.py, offline) and the invariants that a schema cannot
see. No Docker engine or Kubernetes runs here; what can run does: the wheel
build of the image's build stage, the certificate script and the image's
health check command."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from scripts import validate_deploy
from tests.processes import ServerProcess

ROOT = validate_deploy.ROOT
DOCKER = ROOT / "docker"
HEALTHCHECK = DOCKER / "healthcheck.py"
CERTS_SCRIPT = ROOT / "scripts" / "make-dev-certs.sh"
SECRET_SCRIPT = ROOT / "scripts" / "make-cluster-secret.sh"
SECRET_ENV = "CPS_CLUSTER_SECRET_FILE"
ETCD_SERVICES = ("etcd-1", "etcd-2", "etcd-3")
CPS_SERVICES = ("cps-1", "cps-2", "cps-3")
COMPOSE_FILES = ("compose.yaml", "compose.tls.yaml")


# --- helpers ------------------------------------------------------------------


def dockerfile() -> list[str]:
    return validate_deploy._dockerfile_instructions()


def image_user() -> tuple[int, int]:
    (user,) = [line.split()[1] for line in dockerfile() if line.startswith("USER ")]
    uid, gid = user.split(":")
    return int(uid), int(gid)


def kubernetes_docs() -> list[dict[str, Any]]:
    return [doc for path in validate_deploy.kubernetes_files() for doc in load(path)]


def load(path: Path) -> list[dict[str, Any]]:
    return validate_deploy.load_all(path)


def find(kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in kubernetes_docs() if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def only_container(statefulset: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = statefulset["spec"]["template"]["spec"]["containers"]
    (container,) = containers
    return container


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in container["env"]}


def flags(command: list[str]) -> dict[str, str]:
    """--name=value (or --name alone) of a command line, by name."""
    found = {}
    for arg in command:
        if arg.startswith("--"):
            name, _, value = arg[2:].partition("=")
            found[name] = value
    return found


def compose(name: str) -> dict[str, Any]:
    (doc,) = load(DOCKER / name)
    return doc


def run_healthcheck(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK), "--timeout", "5", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


# --- the validator ----------------------------------------------------------------


def test_every_deployment_file_validates() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "validate_deploy.py")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "FAIL" not in done.stdout
    for path in [*validate_deploy.kubernetes_files(), *validate_deploy.compose_files()]:
        assert str(path.relative_to(ROOT)) in done.stdout
    assert "ok   every cps node would start" in done.stdout
    for script in validate_deploy.SHELL_SCRIPTS:
        assert f"ok   shellcheck {script}" in done.stdout
    assert f"shellcheck scripts/{SECRET_SCRIPT.name}" in done.stdout


def test_the_validator_sees_mistakes(tmp_path: Path) -> None:
    manifest = (DOCKER / "kubernetes" / "cps.yaml").read_text()
    typo = tmp_path / "typo.yaml"
    typo.write_text(manifest.replace("readOnlyRootFilesystem", "readOnlyRootFileSystem", 1))
    assert any("readOnlyRootFileSystem" in e for e in validate_deploy.check_kubernetes(typo))
    wrong_type = tmp_path / "type.yaml"
    wrong_type.write_text(manifest.replace("replicas: 3", 'replicas: "3"', 1))
    assert validate_deploy.check_kubernetes(wrong_type)
    unknown_kind = tmp_path / "kind.yaml"
    unknown_kind.write_text(manifest.replace("kind: PodDisruptionBudget", "kind: Disruption"))
    assert validate_deploy.check_kubernetes(unknown_kind)
    twice = tmp_path / "twice.yaml"
    twice.write_text(manifest.replace("  serviceName: cps-peers\n", "  serviceName: a\n" * 2, 1))
    assert validate_deploy.parsed(validate_deploy.check_kubernetes, twice)

    compose_text = (DOCKER / "compose.yaml").read_text()
    bad_compose = tmp_path / "compose.yaml"
    bad_compose.write_text(compose_text.replace("read_only: true", "readonly: true", 1))
    assert any("readonly" in e for e in validate_deploy.check_compose(bad_compose))


def test_cps_server_settings_are_known_flags() -> None:
    used = {(kind, name) for _, kind, name in validate_deploy.cps_settings()}
    # The extraction finds what the files set (else this test proves nothing).
    for flag in ("node-name", "advertise", "etcd-endpoints"):
        assert ("flag", flag) in used
    for env in ("CPS_NODE_NAME", "CPS_ADVERTISE", "CPS_TLS_CERT", "CPS_LISTEN", SECRET_ENV):
        assert ("env", env) in used
    assert validate_deploy.check_cps_settings() == []
    assert validate_deploy.env_name("etcd-endpoints") == "CPS_ETCD_ENDPOINTS"


# --- would each node start? (cps.server.config.parse on its settings) ------------

SAME_CA = "client_ca and peer_ca are the same CA"
NO_WAY = "a cluster node needs a way to know its peers"


def without(path: Path, text: str, tmp_path: Path, drop: str) -> Path:
    """A copy of a deployment file in tmp_path without the lines containing drop."""
    lines = [line for line in text.splitlines(keepends=True) if drop not in line]
    assert len(lines) < len(text.splitlines()), f"{drop!r} is not in {path.name}"
    copy = tmp_path / path.name
    copy.write_text("".join(lines))
    return copy


def test_the_nodes_of_the_files_are_found_and_would_start() -> None:
    compose_nodes = validate_deploy.compose_nodes()
    assert sorted(n.where for n in compose_nodes) == sorted(
        f"docker/{name} {node}"
        for name in ("compose.yaml", "compose.tls.yaml")
        for node in CPS_SERVICES
    )
    (kubernetes_node,) = validate_deploy.kubernetes_nodes()
    # The image's ENV defaults are part of a node's settings; $(POD_NAME) is expanded.
    assert kubernetes_node.environ["CPS_ADVERTISE"] == "cps-0.cps-peers.cps.svc:50051"
    for node in [*compose_nodes, kubernetes_node]:
        assert node.environ["CPS_DATA_DIR"] == "/var/lib/cps"
        assert node.environ[SECRET_ENV]
        assert validate_deploy.check_node(node) == [], node.where
    assert validate_deploy.check_cps_nodes() == []


@pytest.mark.parametrize(
    ("name", "expected"),
    [("compose.yaml", NO_WAY), ("compose.tls.yaml", SAME_CA), ("kubernetes/cps.yaml", SAME_CA)],
)
def test_a_node_without_the_cluster_secret_fails_the_check(
    name: str, expected: str, tmp_path: Path
) -> None:
    """The files as they were before the cluster secret: nodes that cps-server
    refuses to start, and the check says so with the server's own message."""
    path = DOCKER / name
    copy = without(path, path.read_text(), tmp_path, SECRET_ENV)
    kubernetes = "kubernetes" in name
    errors = validate_deploy.check_cps_nodes(
        [] if kubernetes else [copy], [copy] if kubernetes else []
    )
    assert errors
    assert all("cps-server would refuse to start: " + expected in e for e in errors), errors
    assert len(errors) == (1 if kubernetes else len(CPS_SERVICES))
    # The same from the command line (what `make lint-deploy` runs): exit 1.
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "validate_deploy.py"), str(copy)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stdout
    assert "FAIL   every cps node would start" in done.stdout and expected in done.stdout


def test_a_secret_that_is_not_mounted_fails_the_check(tmp_path: Path) -> None:
    path = DOCKER / "compose.yaml"
    copy = without(path, path.read_text(), tmp_path, "secrets: [cluster-secret]")
    errors = validate_deploy.check_cps_nodes([copy], [])
    assert len(errors) == len(CPS_SERVICES)
    assert all("/run/secrets/cluster-secret is not mounted" in e for e in errors), errors


def node(argv: tuple[str, ...], env: dict[str, str], *mounts: str) -> validate_deploy.Node:
    return validate_deploy.Node(
        "test-node", argv, env, tuple(validate_deploy.Mount(m) for m in mounts)
    )


def test_check_node_runs_the_servers_validation() -> None:
    cluster = ("--etcd-endpoints=etcd:2379", "--advertise=n1:50051")
    # No secret, no TLS: refused; the message is cps-server's own.
    (error,) = validate_deploy.check_node(node(cluster, {}))
    assert error.startswith("test-node: cps-server would refuse to start: " + NO_WAY)
    # The secret, as a flag or a variable, mounted: it would start.
    secret = {SECRET_ENV: "/run/secrets/s"}
    assert validate_deploy.check_node(node(cluster, secret, "/run/secrets/s")) == []
    flag = ("--cluster-secret-file", "/run/secrets/s")
    assert validate_deploy.check_node(node(cluster + flag, {}, "/run/secrets")) == []
    # Named but not mounted: the node would find no such file.
    (error,) = validate_deploy.check_node(node(cluster, secret, "/elsewhere"))
    assert "/run/secrets/s is not mounted" in error
    # A single node needs no secret; an unknown flag exits 2 as cps-server would.
    assert validate_deploy.check_node(node((), {})) == []
    (error,) = validate_deploy.check_node(node(("--no-such-flag",), {}))
    assert "would exit 2" in error and "--no-such-flag" in error
    # A setting's own check: a bad address is refused with its reason.
    (error,) = validate_deploy.check_node(node(("--listen=nowhere",), {}))
    assert "listen = 'nowhere'" in error


def test_check_node_tells_cas_apart_by_path() -> None:
    """The same path is the same file (the same CA); different paths are
    different CAs: only the first needs the secret too."""
    tls = {
        "CPS_ETCD_ENDPOINTS": "etcd:2379",
        "CPS_TLS_CERT": "/tls/tls.crt",
        "CPS_TLS_KEY": "/tls/tls.key",
        "CPS_PEER_CERT": "/tls/tls.crt",
        "CPS_PEER_KEY": "/tls/tls.key",
        "CPS_CLIENT_CA": "/tls/clients-ca.crt",
        "CPS_PEER_CA": "/tls/peers-ca.crt",
    }
    assert validate_deploy.check_node(node((), tls, "/tls")) == []
    same = {**tls, "CPS_PEER_CA": "/tls/clients-ca.crt"}
    (error,) = validate_deploy.check_node(node((), same, "/tls"))
    assert SAME_CA in error
    # A relative path is relative to the image's WORKDIR, like the container's.
    relative = {**tls, "CPS_PEER_CA": "../../../tls/./clients-ca.crt"}
    (error,) = validate_deploy.check_node(node((), relative, "/tls"))
    assert SAME_CA in error
    assert validate_deploy.check_node(node((), {**same, SECRET_ENV: "/s/x"}, "/tls", "/s")) == []


def test_what_the_check_cannot_see_is_reported() -> None:
    """Settings the check cannot know fail it rather than pass unseen."""
    assert validate_deploy.check_node(node(("--config=/etc/cps.toml",), {}))
    assert validate_deploy.check_node(node((), {"CPS_CONFIG": "/etc/cps.toml"}))
    other = validate_deploy.Node("n", (), {}, unknown=("n: the command is not cps-server",))
    assert validate_deploy.check_node(other) == ["n: the command is not cps-server"]
    assert validate_deploy.check_cps_nodes([], []) != []


# --- the image ---------------------------------------------------------------------


def test_image_runs_as_a_numeric_non_root_user() -> None:
    instructions = dockerfile()
    uid, gid = image_user()
    assert uid >= 1000 and gid >= 1000
    assert sum(line.startswith("FROM ") for line in instructions) >= 2, "multi-stage"
    # The data dir belongs to that user; the runtime stage runs no pip install.
    runtime = instructions[max(i for i, x in enumerate(instructions) if x.startswith("FROM ")) :]
    assert any(f"-o {uid} -g {gid}" in line and "/var/lib/cps" in line for line in runtime)
    assert not any("pip install" in line for line in runtime)
    assert any(re.match(r"HEALTHCHECK .*CMD \[\"cps-healthcheck\"\]", x) for x in runtime)
    assert 'ENTRYPOINT ["cps-server"]' in runtime
    (expose,) = [line.split()[1:] for line in runtime if line.startswith("EXPOSE ")]
    assert set(expose) == {"50051", "9464"}


def copy_sources() -> list[str]:
    sources = []
    for line in dockerfile():
        if line.startswith("COPY ") and "--from=" not in line:
            words = [w for w in line.split()[1:] if not w.startswith("--")]
            sources += words[:-1]
    return sources


def test_build_context_is_an_allow_list() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*"
    allowed = {p.removeprefix("!").rstrip("/") for p in patterns if p.startswith("!")}
    for source in copy_sources():
        assert source.rstrip("/") in allowed, f"COPY {source} is outside the context"
    assert not any("certs" in p for p in allowed)


def test_the_build_stage_copies_enough_to_build_the_wheel(tmp_path: Path) -> None:
    """The files the Dockerfile copies, alone, build the cps wheel."""
    context = tmp_path / "context"
    for source in copy_sources():
        if source.startswith("docker/"):
            continue
        src = ROOT / source
        if src.is_dir():
            shutil.copytree(src, context / source, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (context / source).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, context / source)
    build = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"),
            *("--wheel-dir", str(tmp_path / "wheels"), str(context)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    assert list((tmp_path / "wheels").glob("cps-*.whl"))


# --- Kubernetes -------------------------------------------------------------------


def test_kubernetes_pods_are_locked_down() -> None:
    uid, gid = image_user()
    for name in ("cps", "etcd"):
        pod = find("StatefulSet", name)["spec"]["template"]["spec"]
        security = pod["securityContext"]
        assert security["runAsNonRoot"] is True
        assert isinstance(security["runAsUser"], int) and security["runAsUser"] > 0
        assert security["fsGroup"] == security["runAsGroup"]
        assert security["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        container = only_container(find("StatefulSet", name))["securityContext"]
        assert container["allowPrivilegeEscalation"] is False
        assert container["readOnlyRootFilesystem"] is True
        assert container["capabilities"] == {"drop": ["ALL"]}
    cps_pod = find("StatefulSet", "cps")["spec"]["template"]["spec"]
    assert (cps_pod["securityContext"]["runAsUser"], cps_pod["securityContext"]["fsGroup"]) == (
        uid,
        gid,
    )
    # Service links would put CPS_PORT, CPS_SERVICE_HOST, ... into the
    # environment that cps-server reads its CPS_<FLAG> settings from.
    assert cps_pod["enableServiceLinks"] is False


def test_probes_do_not_kill_a_node_that_catches_up() -> None:
    container = only_container(find("StatefulSet", "cps"))
    liveness, readiness = container["livenessProbe"], container["readinessProbe"]
    startup = container["startupProbe"]
    assert liveness != readiness
    assert "grpc" not in liveness, "grpc.health.v1 is NOT_SERVING while catching up"
    assert liveness["httpGet"]["path"] == "/healthz"
    assert startup["httpGet"]["path"] == "/healthz"
    # Readiness is the state of grpc.health.v1 for "": /readyz, or a gRPC probe.
    assert readiness.get("httpGet", {}).get("path") == "/readyz" or readiness["grpc"] == {
        "port": 50051,
        "service": "",
    }
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"grpc": 50051, "metrics": 9464}
    env = env_of(container)
    assert env["CPS_METRICS_LISTEN"].endswith(":9464")
    assert not env["CPS_METRICS_LISTEN"].startswith("127."), "the kubelet probes the pod IP"


def test_statefulset_names_and_peers() -> None:
    statefulset = find("StatefulSet", "cps")
    spec = statefulset["spec"]
    assert spec["replicas"] == 3
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    peers = find("Service", spec["serviceName"])
    assert peers["spec"]["clusterIP"] == "None"
    assert peers["spec"]["publishNotReadyAddresses"] is True
    client_service = find("Service", "cps")
    assert client_service["spec"].get("publishNotReadyAddresses") is not True
    assert client_service["spec"]["selector"].items() <= labels.items()

    env = env_of(only_container(statefulset))
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["CPS_NODE_NAME"] == "$(POD_NAME)"
    assert env["CPS_ADVERTISE"] == (f"$(POD_NAME).{spec['serviceName']}.$(POD_NAMESPACE).svc:50051")
    names = [item["name"] for item in only_container(statefulset)["env"]]
    assert names.index("POD_NAME") < names.index("CPS_NODE_NAME"), "$(VAR) needs it first"
    assert names.index("POD_NAMESPACE") < names.index("CPS_ADVERTISE")
    etcd = find("StatefulSet", "etcd")
    expected = ",".join(
        f"etcd-{n}.{etcd['spec']['serviceName']}.cps.svc:2379"
        for n in range(etcd["spec"]["replicas"])
    )
    assert env["CPS_ETCD_ENDPOINTS"] == expected


def test_spread_and_disruption_budget() -> None:
    for name in ("cps", "etcd"):
        spec = find("StatefulSet", name)["spec"]
        labels = spec["template"]["metadata"]["labels"]
        anti = spec["template"]["spec"]["affinity"]["podAntiAffinity"]
        terms = [
            term.get("podAffinityTerm", term)
            for term in anti.get("preferredDuringSchedulingIgnoredDuringExecution", [])
            + anti.get("requiredDuringSchedulingIgnoredDuringExecution", [])
        ]
        assert any(
            t["topologyKey"] == "kubernetes.io/hostname"
            and t["labelSelector"]["matchLabels"].items() <= labels.items()
            for t in terms
        )
        budgets = [
            d
            for d in kubernetes_docs()
            if d["kind"] == "PodDisruptionBudget"
            and d["spec"]["selector"]["matchLabels"].items() <= labels.items()
        ]
        assert len(budgets) == 1, f"one PodDisruptionBudget for {name}"
        assert budgets[0]["spec"]["maxUnavailable"] == 1


def test_data_and_tls_volumes() -> None:
    statefulset = find("StatefulSet", "cps")
    container = only_container(statefulset)
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    assert mounts[claim["metadata"]["name"]]["mountPath"] == "/var/lib/cps"
    volumes = {v["name"]: v for v in statefulset["spec"]["template"]["spec"]["volumes"]}
    secrets = {
        volumes[n]["secret"]["secretName"]: (volumes[n]["secret"], mounts[n])
        for n in mounts
        if "secret" in volumes.get(n, {})
    }
    assert set(secrets) == {"cps-tls", "cps-cluster-secret"}
    tls, tls_mount = secrets["cps-tls"]
    assert {item["key"] for item in tls["items"]} == {"ca.crt", "tls.crt", "tls.key"}
    tls_dir = tls_mount["mountPath"]
    env = env_of(container)
    for name in ("CPS_TLS_CERT", "CPS_TLS_KEY", "CPS_CLIENT_CA", "CPS_PEER_CERT", "CPS_PEER_CA"):
        assert env[name].startswith(tls_dir + "/")
    # The cluster secret: its own Secret, read-only, readable by the group only.
    secret, secret_mount = secrets["cps-cluster-secret"]
    (item,) = secret["items"]
    assert item["key"] == "cluster-secret"
    assert env[SECRET_ENV] == f"{secret_mount['mountPath']}/{item['path']}"
    assert secret_mount["readOnly"] is True and tls_mount["readOnly"] is True
    assert secret["defaultMode"] == 0o440
    assert "/tmp" in {m["mountPath"] for m in container["volumeMounts"]}


def test_etcd_members_agree_on_the_cluster() -> None:
    etcd = find("StatefulSet", "etcd")
    service = etcd["spec"]["serviceName"]
    assert find("Service", service)["spec"]["publishNotReadyAddresses"] is True
    args = flags(only_container(etcd)["args"])
    members = dict(m.split("=", 1) for m in args["initial-cluster"].split(","))
    assert members == {f"etcd-{n}": f"http://etcd-{n}.{service}.cps.svc:2380" for n in range(3)}
    assert args["initial-advertise-peer-urls"] == f"http://$(POD_NAME).{service}.cps.svc:2380"
    assert etcd["spec"]["podManagementPolicy"] == "Parallel"


# --- compose ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["compose.yaml", "compose.tls.yaml"])
def test_compose_cluster(name: str) -> None:
    services = compose(name)["services"]
    assert set(services) == {*ETCD_SERVICES, *CPS_SERVICES}
    scheme = "https" if "tls" in name else "http"
    expected = ",".join(f"{s}={scheme}://{s}:2380" for s in ETCD_SERVICES)
    for member in ETCD_SERVICES:
        args = flags(services[member]["command"])
        assert args["name"] == member
        assert args["initial-cluster"] == expected
        assert args["initial-advertise-peer-urls"] == f"{scheme}://{member}:2380"
        assert args["advertise-client-urls"] == f"{scheme}://{member}:2379"
        assert "healthcheck" in services[member]
    host_ports = set()
    for node in CPS_SERVICES:
        service = services[node]
        args = flags(service["command"])
        assert args["node-name"] == node
        assert args["advertise"] == f"{node}:50051"
        assert args["etcd-endpoints"] == ",".join(f"{s}:2379" for s in ETCD_SERVICES)
        assert service["depends_on"] == {
            member: {"condition": "service_healthy"} for member in ETCD_SERVICES
        }
        assert service["healthcheck"]["test"] == ["CMD", "cps-healthcheck"]
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
        for port in service["ports"]:
            assert port.startswith("127.0.0.1:"), "published on loopback only"
            host_ports.add(port.split(":")[1])
        assert any(v.endswith(":/var/lib/cps") for v in service["volumes"])
    assert {"50051", "50052", "50053"} <= host_ports


@pytest.mark.parametrize("name", ["compose.yaml", "compose.tls.yaml"])
def test_compose_nodes_share_the_secret_the_script_makes(name: str) -> None:
    doc = compose(name)
    # The file the script writes by default, relative to the compose file.
    assert doc["secrets"] == {"cluster-secret": {"file": "./certs/cluster-secret"}}
    for node in CPS_SERVICES:
        service = doc["services"][node]
        assert service["secrets"] == ["cluster-secret"]
        assert service["environment"][SECRET_ENV] == "/run/secrets/cluster-secret"


def test_cluster_secret_script(tmp_path: Path) -> None:
    secret = tmp_path / "certs" / "cluster-secret"
    done = subprocess.run(
        ["bash", str(SECRET_SCRIPT), str(secret)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    first = secret.read_text()
    assert re.fullmatch(r"[0-9a-f]{64}\n", first), "32 random bytes, hex"
    # Compose bind-mounts the file itself: user 10001 reads it through "other".
    assert secret.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in secret.parent.iterdir()] == ["cluster-secret"], "no leftovers"
    again = subprocess.run(["bash", str(SECRET_SCRIPT), str(secret)], capture_output=True)
    assert again.returncode != 0 and secret.read_text() == first, "kept without -f"
    forced = subprocess.run(["bash", str(SECRET_SCRIPT), "-f", str(secret)], capture_output=True)
    assert forced.returncode == 0 and secret.read_text() != first
    # By default it writes the file the compose files name (a copy of the
    # script in another tree, so as not to write into this one), git-ignored.
    (tmp_path / "tree" / "scripts").mkdir(parents=True)
    copy = shutil.copy(SECRET_SCRIPT, tmp_path / "tree" / "scripts")
    default = subprocess.run(["bash", str(copy)], capture_output=True, text=True, timeout=60)
    assert default.returncode == 0, default.stderr
    compose_dir = tmp_path / "tree" / "docker"
    (source,) = {s["file"] for name in COMPOSE_FILES for s in compose(name)["secrets"].values()}
    assert (compose_dir / source).is_file()
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "docker/certs/cluster-secret"], cwd=ROOT, timeout=30
    )
    assert ignored.returncode == 0


def test_tls_compose_mounts_what_the_certificate_script_makes(certs: Path) -> None:
    services = compose("compose.tls.yaml")["services"]
    mounted = set()
    for service in services.values():
        for volume in service["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("./certs/"):
                mounted.add(source.removeprefix("./certs/"))
    made = {p.relative_to(certs).as_posix() for p in certs.rglob("*") if p.is_file()}
    assert mounted and mounted <= made
    env = services["cps-1"]["environment"]
    assert env["PROBE_CA"] and env["PROBE_CERT"] and env["PROBE_SERVER_NAME"] == "localhost"


# --- certificates -----------------------------------------------------------------


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("certs")
    done = subprocess.run(
        ["bash", str(CERTS_SCRIPT), str(out)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return out


def openssl(*args: str) -> str:
    done = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_dev_certificates(certs: Path) -> None:
    ca = str(certs / "ca.crt")
    for name in [*CPS_SERVICES, *ETCD_SERVICES]:
        openssl("verify", "-purpose", "sslserver", "-CAfile", ca, str(certs / f"{name}.crt"))
        openssl("verify", "-purpose", "sslclient", "-CAfile", ca, str(certs / f"{name}.crt"))
        sans = openssl(
            "x509", "-in", str(certs / f"{name}.crt"), "-noout", "-ext", "subjectAltName"
        )
        assert f"DNS:{name}," in sans and "DNS:localhost" in sans and "127.0.0.1" in sans
    openssl("verify", "-purpose", "sslclient", "-CAfile", ca, str(certs / "client.crt"))
    kubernetes = certs / "kubernetes"
    assert sorted(p.name for p in kubernetes.iterdir()) == ["ca.crt", "tls.crt", "tls.key"]
    sans = openssl("x509", "-in", str(kubernetes / "tls.crt"), "-noout", "-ext", "subjectAltName")
    assert "DNS:*.cps-peers.cps.svc," in sans and "DNS:cps.cps.svc," in sans
    # A second run does not replace the CA without -f.
    again = subprocess.run(["bash", str(CERTS_SCRIPT), str(certs)], capture_output=True)
    assert again.returncode != 0


def test_certificates_stay_out_of_git_and_the_image() -> None:
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "docker/certs/ca.key"], cwd=ROOT, timeout=30
    )
    assert ignored.returncode == 0
    assert "docker/certs" not in " ".join(copy_sources())


# --- the image's health check -----------------------------------------------------


@pytest.fixture()
def health_server(certs: Path) -> Iterator[tuple[health.HealthServicer, int, int]]:
    """A grpc.health.v1 server on two loopback ports: plain, and mutual TLS
    with the development certificates of cps-1."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    plain = server.add_insecure_port("127.0.0.1:0")
    credentials = grpc.ssl_server_credentials(
        [((certs / "cps-1.key").read_bytes(), (certs / "cps-1.crt").read_bytes())],
        root_certificates=(certs / "ca.crt").read_bytes(),
        require_client_auth=True,
    )
    tls = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    try:
        yield servicer, plain, tls
    finally:
        server.stop(grace=None)


def test_healthcheck_exit_codes(health_server: tuple[health.HealthServicer, int, int]) -> None:
    servicer, plain, _ = health_server
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    assert run_healthcheck("--addr", f"127.0.0.1:{plain}").returncode == 0
    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    assert run_healthcheck("--addr", f"127.0.0.1:{plain}").returncode == 1
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    closed = server.add_insecure_port("127.0.0.1:0")  # bound, never started
    try:
        assert run_healthcheck("--addr", f"127.0.0.1:{closed}", "--timeout", "1").returncode == 2
    finally:
        server.stop(grace=None)


def test_healthcheck_over_mutual_tls(
    health_server: tuple[health.HealthServicer, int, int], certs: Path
) -> None:
    servicer, _, tls = health_server
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    ca = ("--ca", str(certs / "ca.crt"), "--server-name", "localhost")
    client = ("--cert", str(certs / "client.crt"), "--key", str(certs / "client.key"))
    assert run_healthcheck("--addr", f"127.0.0.1:{tls}", *ca, *client).returncode == 0
    # The node's own certificate has clientAuth: compose.tls.yaml probes with it.
    own = ("--cert", str(certs / "cps-1.crt"), "--key", str(certs / "cps-1.key"))
    assert run_healthcheck("--addr", f"127.0.0.1:{tls}", *ca, *own).returncode == 0
    assert run_healthcheck("--addr", f"127.0.0.1:{tls}", *ca).returncode == 2, "no client cert"


def test_healthcheck_against_cps_server() -> None:
    with ServerProcess.start() as server:
        done = run_healthcheck("--addr", server.address)
        assert done.returncode == 0, done.stderr
        assert "SERVING" in done.stdout
