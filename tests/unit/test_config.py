"""cps-server settings: flag > env > file > default, validation, the doc."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from cps.server import config
from cps.server.config import ConfigError, Settings, parse
from cps.server.core.limits import Limits

ROOT = Path(__file__).resolve().parents[2]
SERVER = str(Path(sys.executable).parent / "cps-server")


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _clean_env() -> dict[str, str]:
    """This process's environment without CPS_* settings."""
    return {key: value for key, value in os.environ.items() if not key.startswith("CPS_")}


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def problems(argv: list[str], environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        parse(argv, environ or {})
    return str(caught.value)


# --- precedence -------------------------------------------------------------


def test_defaults() -> None:
    settings = parse([], {"XDG_STATE_HOME": "/state"})
    assert settings.listen == "127.0.0.1:50051"
    assert settings.node_name == ""  # the node takes the address it advertises
    assert settings.data_dir == Path("/state/cps")
    assert settings.sync == "FULL"
    assert settings.metrics_listen == ""
    assert settings.limits == Limits()
    assert settings.etcd_endpoints == ()
    assert settings.cluster_name == "cps"
    assert (settings.replicas, settings.workers, settings.lease_ttl_seconds) == (2, 1, 3)
    assert settings.tls_cert is None and settings.auth_file is None
    assert settings.persist_server_checkpoints is True


def test_flag_over_env_over_file_over_default(tmp_path: Path) -> None:
    file = write(
        tmp_path / "cps.toml",
        'listen = "file:1"\nmetrics_listen = "file:2"\ngrace_seconds = 5\n'
        "[storage]\nsync = 'normal'\n"
        "[cluster]\nreplicas = 3\nlease_ttl_seconds = 4\n"
        "[limits]\nmax_sessions = 11\nmax_checkpoints = 12\nmax_handles_per_session = 13\n",
    )
    environ = {
        "CPS_CONFIG": str(file),
        "CPS_LISTEN": "env:1",
        "CPS_MAX_SESSIONS": "21",
        "CPS_MAX_CHECKPOINTS": "22",
        "CPS_REPLICAS": "4",
    }
    settings = parse(["--listen", "flag:1", "--max-sessions", "31"], environ)
    # flag beats env and file
    assert settings.listen == "flag:1"
    assert settings.limits.max_sessions == 31
    # env beats file
    assert settings.limits.max_checkpoints == 22
    assert settings.replicas == 4
    # file beats default
    assert settings.metrics_listen == "file:2"
    assert settings.grace_seconds == 5.0
    assert settings.sync == "NORMAL"
    assert settings.lease_ttl_seconds == 4
    assert settings.limits.max_handles_per_session == 13
    # default
    assert settings.limits.max_iovector_elements == Limits().max_iovector_elements
    assert settings.keepalive_seconds == 30.0


def test_config_flag_beats_config_env(tmp_path: Path) -> None:
    by_env = write(tmp_path / "env.toml", "[cluster]\nreplicas = 4\n")
    by_flag = write(tmp_path / "flag.toml", "[cluster]\nreplicas = 3\n")
    settings = parse(["--config", str(by_flag)], {"CPS_CONFIG": str(by_env)})
    assert settings.replicas == 3
    assert parse(["--config", ""], {"CPS_CONFIG": str(by_env)}).replicas == 2


def test_env_values(tmp_path: Path) -> None:
    environ = {
        "CPS_PERSIST_SERVER_CHECKPOINTS": "no",
        "CPS_SYNC": "Normal",
        "CPS_ETCD_ENDPOINTS": "etcd-0:2379, etcd-1:2379",
        "CPS_CLUSTER_SECRET_FILE": str(write(tmp_path / "secret", "s3cret")),
        "CPS_DATA_DIR": "/data",
        "CPS_LOG_LEVEL": "DEBUG",
    }
    settings = parse([], environ)
    assert settings.persist_server_checkpoints is False
    assert settings.sync == "NORMAL"
    assert settings.etcd_endpoints == ("etcd-0:2379", "etcd-1:2379")
    assert settings.data_dir == Path("/data")
    assert settings.log_level == "debug"


@pytest.mark.parametrize(
    ("text", "value"),
    [("true", True), ("1", True), ("YES", True), ("false", False), ("0", False), ("No", False)],
)
def test_env_booleans(text: str, value: bool) -> None:
    environ = {"CPS_PERSIST_SERVER_CHECKPOINTS": text}
    assert parse([], environ).persist_server_checkpoints is value


def test_bool_flag_beats_env() -> None:
    environ = {"CPS_PERSIST_SERVER_CHECKPOINTS": "false"}
    assert parse(["--persist-server-checkpoints"], environ).persist_server_checkpoints
    assert not parse(["--no-persist-server-checkpoints"], {}).persist_server_checkpoints


def test_empty_env_overrides_the_file(tmp_path: Path) -> None:
    cert = write(tmp_path / "c.pem", "x")
    file = write(
        tmp_path / "cps.toml",
        f'metrics_listen = "127.0.0.1:9464"\n[tls]\ntls_cert = "{cert}"\ntls_key = "{cert}"\n',
    )
    settings = parse(
        ["--config", str(file)], {"CPS_METRICS_LISTEN": "", "CPS_TLS_CERT": "", "CPS_TLS_KEY": ""}
    )
    assert settings.metrics_listen == ""
    assert settings.tls_cert is None


def test_file_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "tls").mkdir()
    write(tmp_path / "tls" / "s.pem", "cert")
    write(tmp_path / "tls" / "k.pem", "key")
    file = write(
        tmp_path / "cps.toml",
        '[storage]\ndata_dir = "data"\n[tls]\ntls_cert = "tls/s.pem"\ntls_key = "tls/k.pem"\n'
        'peer_ca = "tls/s.pem"\ncluster_secret_file = "tls/k.pem"\n'
        '[cluster]\netcd_endpoints = ["a:2379", "[::1]:2379"]\n',
    )
    settings = parse(["--config", str(file)], {})
    assert settings.data_dir == tmp_path / "data"
    assert settings.tls_cert == tmp_path / "tls" / "s.pem"
    assert settings.tls_key == tmp_path / "tls" / "k.pem"
    assert settings.etcd_endpoints == ("a:2379", "[::1]:2379")


def test_node_name_is_left_to_the_node_unless_given() -> None:
    assert parse(["--listen", "0.0.0.0:7000"], {}).node_name == ""
    settings = parse(["--listen", "0.0.0.0:7000", "--advertise", "cps-0:7000"], {})
    assert settings.advertise == "cps-0:7000"
    assert parse(["--advertise", "cps-0:7000", "--node-name", "n"], {}).node_name == "n"


def test_later_flag_wins() -> None:
    # tests/support.py passes --listen first and lets a caller override it
    assert parse(["--listen", "127.0.0.1:0", "--listen", "127.0.0.1:5"], {}).listen == (
        "127.0.0.1:5"
    )


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1:0", "0.0.0.0:65535", "localhost:50051", "cps-0.cps.svc:1", "[::1]:50051", "[::]:0"],
)
def test_good_addresses(address: str) -> None:
    assert parse(["--listen", address], {}).listen == address


# --- validation -------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("127.0.0.1", "no port"),
        ("localhost:", "port '' is not a number"),
        ("127.0.0.1:65536", "out of range 0-65535"),
        ("127.0.0.1:-1", "is not a number"),
        ("127.0.0.1:http", "is not a number"),
        (":50051", "no host"),
        ("::1:50051", "IPv6 address goes in brackets"),
        ("[::1]", "no port"),
        ("[::1:50051", "no ]"),
        ("[nope]:1", "not an IPv6 address"),
        ("300.1.1.1:1", "not an IPv4 address"),
        ("bad_host:1", "not a host name"),
        ("-x:1", "not a host name"),
    ],
)
def test_bad_listen_flag(address: str, problem: str) -> None:
    message = problems([f"--listen={address}"])
    assert f"listen = {address!r} (from flag --listen)" in message
    assert problem in message


def test_bad_setting_from_env_names_the_variable() -> None:
    message = problems([], {"CPS_METRICS_LISTEN": "0.0.0.0"})
    assert "metrics_listen = '0.0.0.0' (from env CPS_METRICS_LISTEN): no port" in message


def test_bad_setting_from_file_names_the_file_and_key(tmp_path: Path) -> None:
    file = write(tmp_path / "cps.toml", "[cluster]\nreplicas = 0\n")
    message = problems(["--config", str(file)])
    assert f"replicas = 0 (from file {file}, key cluster.replicas): must be at least 1" in message


def test_port_zero_is_not_advertised() -> None:
    assert "advertise = 'cps-0:0' (from flag --advertise)" in problems(["--advertise", "cps-0:0"])
    assert "advertise" in problems([], {"CPS_ADVERTISE": "127.0.0.1:0"})


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("a:1,", "an empty endpoint"),
        ("a:1,b", "'b': no port"),
        ("http://etcd:2379", "without a scheme"),
        ("etcd:0", "port 0"),
    ],
)
def test_bad_etcd_endpoints(value: str, problem: str) -> None:
    message = problems([], {"CPS_ETCD_ENDPOINTS": value})
    assert "etcd_endpoints" in message and "(from env CPS_ETCD_ENDPOINTS)" in message
    assert problem in message


def test_etcd_endpoints_must_be_a_list_in_the_file(tmp_path: Path) -> None:
    file = write(tmp_path / "cps.toml", '[cluster]\netcd_endpoints = "a:1"\n')
    assert "expected a list of strings" in problems(["--config", str(file)])


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["--lease-ttl", "0"],
            "lease_ttl_seconds = '0' (from flag --lease-ttl): must be at least 1",
        ),
        (["--keepalive-seconds", "-1"], "keepalive_seconds = '-1' (from flag --keepalive-seconds)"),
        (["--session-timeout-seconds", "0"], "session_timeout_seconds = '0'"),
        (["--replica-timeout-seconds", "0"], "replica_timeout_seconds = '0'"),
        (["--grace-seconds", "-1"], "grace_seconds = '-1' (from flag --grace-seconds): must be 0"),
        (["--grace-seconds", "nan"], "grace_seconds = 'nan' (from flag --grace-seconds)"),
        (["--replicas", "0"], "replicas = '0' (from flag --replicas): must be at least 1"),
        (["--workers", "two"], "workers = 'two' (from flag --workers): expected an integer"),
        (
            ["--max-sessions", "0"],
            "max_sessions = '0' (from flag --max-sessions): must be at least 1",
        ),
        (
            ["--max-message-bytes", str(2**31)],
            "max_message_bytes = '2147483648' (from flag --max-message-bytes): must be at most",
        ),
        (
            ["--cluster-name", "My_Cluster"],
            "cluster_name = 'My_Cluster' (from flag --cluster-name)",
        ),
        (["--sync", "fast"], "sync = 'fast' (from flag --sync): expected one of full, normal"),
        (["--log-level", "loud"], "log_level = 'loud' (from flag --log-level)"),
        (["--data-dir", ""], "data_dir = '' (from flag --data-dir): expected a path"),
    ],
)
def test_bad_values(argv: list[str], expected: str) -> None:
    assert expected in problems(argv)


def test_durations_accept_fractions_and_zero_where_allowed() -> None:
    settings = parse(["--session-timeout-seconds", "0.2", "--grace-seconds", "0"], {})
    assert settings.session_timeout_seconds == 0.2
    assert settings.grace_seconds == 0.0
    assert parse(["--grace-seconds", "0"], {}).grace_seconds == 0.0


def test_bad_env_boolean() -> None:
    message = problems([], {"CPS_PERSIST_SERVER_CHECKPOINTS": "maybe"})
    assert "persist_server_checkpoints = 'maybe' (from env CPS_PERSIST_SERVER_CHECKPOINTS)" in (
        message
    )
    assert "expected true/false, 1/0 or yes/no" in message


def test_bad_limit_from_env() -> None:
    message = problems([], {"CPS_MAX_SESSIONS": "0"})
    assert "max_sessions = '0' (from env CPS_MAX_SESSIONS): must be at least 1" in message


def test_a_limit_in_seconds() -> None:
    settings = parse(["--library-handle-timeout-seconds", "0.5"], {})
    assert settings.limits.library_handle_timeout_seconds == 0.5
    message = problems(["--library-handle-timeout-seconds", "0"])
    assert "(from flag --library-handle-timeout-seconds): must be greater than 0" in message
    option = next(o for o in config.LIMIT_OPTIONS if o.name == "library_handle_timeout_seconds")
    assert (option.metavar, option.type_text) == ("SECONDS", "seconds")


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ('[limits]\nmax_sessions = "500"\n', "max_sessions = '500'"),
        ("[limits]\nmax_sessions = true\n", "max_sessions = True"),
        ("[limits]\nmax_sessions = 1.5\n", "max_sessions = 1.5"),
        ("[storage]\npersist_server_checkpoints = 'yes'\n", "expected true or false"),
        ("listen = 50051\n", "listen = 50051"),
        ("grace_seconds = inf\n", "expected a finite number"),
    ],
)
def test_file_values_keep_their_toml_type(tmp_path: Path, toml: str, expected: str) -> None:
    file = write(tmp_path / "cps.toml", toml)
    message = problems(["--config", str(file)])
    assert expected in message and str(file) in message


def test_every_problem_is_reported() -> None:
    error_text = problems(["--listen", "x", "--replicas", "0"], {"CPS_MAX_SESSIONS": "0"})
    lines = error_text.splitlines()
    assert len(lines) == 3
    assert [line.split(" ")[0] for line in lines] == ["listen", "replicas", "max_sessions"]


# --- TLS files --------------------------------------------------------------


@pytest.fixture
def pem(tmp_path: Path) -> Path:
    return write(tmp_path / "x.pem", "-----BEGIN-----\n")


@pytest.mark.parametrize(
    ("given", "missing"),
    [
        ("tls_cert", "tls_key"),
        ("tls_key", "tls_cert"),
        ("peer_cert", "peer_key"),
        ("peer_key", "peer_cert"),
        ("etcd_cert", "etcd_key"),
        ("etcd_key", "etcd_cert"),
        ("client_ca", "tls_cert"),
    ],
)
def test_a_cert_needs_its_key(pem: Path, given: str, missing: str) -> None:
    flag = "--" + given.replace("_", "-")
    message = problems([flag, str(pem)])
    assert f"{given} = {str(pem)!r} (from flag {flag}) needs {missing} too" in message


def test_complete_tls_settings(pem: Path, tmp_path: Path) -> None:
    # auth_file is a TOML table, not a PEM file (its own tests below).
    names = [o.name for o in config.OPTIONS if o.group == "tls" and o.name != "auth_file"]
    argv = [arg for name in names for arg in ("--" + name.replace("_", "-"), str(pem))]
    table = write(tmp_path / "auth.toml", "")
    settings = parse([*argv, "--auth-file", str(table)], {})
    assert all(getattr(settings, name) == pem for name in names)
    assert settings.auth_file == table and settings.authorization is not None


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    message = problems([], {"CPS_AUTH_FILE": str(missing)})
    assert f"auth_file = {str(missing)!r} (from env CPS_AUTH_FILE): no such file" in message


def test_missing_file_from_the_file_shows_the_resolved_path(tmp_path: Path) -> None:
    file = write(tmp_path / "cps.toml", '[tls]\npeer_ca = "ca.pem"\n')
    message = problems(["--config", str(file)])
    assert (
        f"peer_ca = 'ca.pem' (from file {file}, key tls.peer_ca): no such file "
        f"({tmp_path / 'ca.pem'})"
    ) in message


def test_a_folder_is_not_a_file(tmp_path: Path) -> None:
    message = problems(["--cluster-secret-file", str(tmp_path)])
    assert "cluster_secret_file" in message and "not a regular file" in message


def test_unreadable_file(pem: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if _is_root():  # root reads every file: pretend it cannot
        monkeypatch.setattr(os, "access", lambda path, mode: False)
    else:
        pem.chmod(0)
    message = problems(["--auth-file", str(pem)])
    assert f"auth_file = {str(pem)!r} (from flag --auth-file): not readable" in message


# --- the file ---------------------------------------------------------------


def test_unknown_key_is_an_error(tmp_path: Path) -> None:
    file = write(tmp_path / "cps.toml", "[limits]\nmax_sesions = 5\n")
    message = problems(["--config", str(file)])
    assert f"config file {file}: unknown key 'limits.max_sesions'" in message
    assert "did you mean 'limits.max_sessions'?" in message


def test_key_in_the_wrong_table(tmp_path: Path) -> None:
    file = write(tmp_path / "cps.toml", "max_sessions = 5\n[cluster]\nlisten = 'a:1'\n")
    message = problems(["--config", str(file)])
    assert "unknown key 'max_sessions': max_sessions belongs at limits.max_sessions" in message
    assert "unknown key 'cluster.listen': listen belongs at listen" in message


def test_unknown_table_and_table_that_is_not_one(tmp_path: Path) -> None:
    file = write(tmp_path / "cps.toml", "limits = 3\n[nope]\nx = 1\n")
    message = problems(["--config", str(file)])
    assert "limits must be a table" in message
    assert "unknown key 'nope'" in message


def test_missing_and_invalid_config_file(tmp_path: Path) -> None:
    message = problems([], {"CPS_CONFIG": str(tmp_path / "none.toml")})
    assert "(from env CPS_CONFIG): cannot read" in message
    bad = write(tmp_path / "bad.toml", "listen = \n")
    assert "not valid TOML" in problems(["--config", str(bad)])


def test_documented_example_names_every_setting(tmp_path: Path) -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text()
    example = re.search(r"```toml\n(.*?)```", doc, re.S)
    assert example is not None
    file = write(tmp_path / "example.toml", example.group(1))
    found: list[str] = []
    loaded = config._load_file(str(file), {}, found)
    assert found == []
    assert loaded is not None
    assert set(loaded.values) == {option.name for option in config.ALL_OPTIONS}


# --- the declaration, --help, --version, the doc ----------------------------


def test_declaration_matches_settings() -> None:
    settings_fields = {field.name for field in dataclasses.fields(Settings)}
    declared = {option.name for option in config.OPTIONS}
    assert settings_fields == declared | {"limits", "authorization", "worker"}
    limits = {option.name for option in config.LIMIT_OPTIONS}
    assert limits == {field.name for field in dataclasses.fields(Limits)}
    assert not limits & settings_fields


def test_help_lists_every_setting(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse(["--help"], {})
    assert exited.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for option in config.ALL_OPTIONS:
        assert option.cli in text
        assert option.env in text
    assert "[default: 127.0.0.1:50051; env CPS_LISTEN; file listen]" in text
    assert "--no-persist-server-checkpoints" in text


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse(["--version"], {})
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"cps-server {metadata.version('cps')}"


def test_unknown_flag_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse(["--max-sesions", "5"], {})
    assert exited.value.code == 2
    assert "--max-sesions" in capsys.readouterr().err


def test_doc_table_is_generated() -> None:
    path = ROOT / "docs" / "configuration.md"
    committed = path.read_text()
    assert committed == config.update_doc(committed), (
        "docs/configuration.md is stale: run "
        ".venv/bin/python -m cps.server.config --update docs/configuration.md"
    )


def test_server_exits_2_on_listen_without_port() -> None:
    done = subprocess.run(
        [SERVER, "--listen", "127.0.0.1"],
        capture_output=True,
        text=True,
        timeout=30,
        env=_clean_env(),
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "cps-server: listen = '127.0.0.1' (from flag --listen): no port: expected HOST:PORT"
    )
    assert done.stdout == ""


def test_server_version() -> None:
    done = subprocess.run(
        [SERVER, "--version"], capture_output=True, text=True, timeout=30, env=_clean_env()
    )
    assert done.returncode == 0
    assert done.stdout.strip() == f"cps-server {metadata.version('cps')}"


# --- peers only (docs/security.md) --------------------------------------------


def test_a_cluster_node_needs_a_secret_or_mutual_tls(tmp_path: Path) -> None:
    message = problems(["--etcd-endpoints", "e:2379"])
    assert "--cluster-secret-file" in message
    secret = write(tmp_path / "secret", "s3cret")
    parse(["--etcd-endpoints", "e:2379", "--cluster-secret-file", str(secret)], {})
    # Nothing of it is asked of a single node.
    assert parse([], {}).cluster_secret_file is None


def test_mutual_tls_between_nodes_needs_the_peer_settings(tmp_path: Path) -> None:
    pem = {name: str(write(tmp_path / f"{name}.pem", name)) for name in ("cert", "key", "a", "b")}
    tls = ["--etcd-endpoints", "e:2379", "--tls-cert", pem["cert"], "--tls-key", pem["key"]]
    assert "needs peer_ca" in problems([*tls, "--client-ca", pem["a"]])
    assert "needs peer_cert" in problems([*tls, "--client-ca", pem["a"], "--peer-ca", pem["b"]])
    peers = ["--peer-cert", pem["cert"], "--peer-key", pem["key"], "--peer-ca", pem["b"]]
    settings = parse([*tls, "--client-ca", pem["a"], *peers], {})
    assert settings.peer_ca == Path(pem["b"])
    # One CA for clients and peers: a client certificate would pass as a
    # peer's, so the secret is required on top.
    same = [*tls, "--client-ca", pem["b"], *peers]
    assert "same CA" in problems(same)
    secret = str(write(tmp_path / "secret", "s3cret"))
    parse([*same, "--cluster-secret-file", secret], {})


# --- workers (docs/workers.md) --------------------------------------------------


def test_several_workers_need_etcd() -> None:
    """A node alone keeps its directory in its one process's memory."""
    message = problems(["--workers", "2"])
    assert "workers = 2 (from flag --workers) needs etcd_endpoints" in message
    assert "a single worker" in message and "--etcd-endpoints" in message
    assert "workers = 3 (from env CPS_WORKERS) needs etcd_endpoints" in problems(
        [], {"CPS_WORKERS": "3"}
    )
    assert parse(["--workers", "1"], {}).workers == 1


def test_several_workers_need_room_for_their_ports(tmp_path: Path) -> None:
    secret = str(write(tmp_path / "secret", "s3cret"))
    cluster = ["--etcd-endpoints", "e:2379", "--cluster-secret-file", secret, "--workers", "2"]
    assert "needs a fixed port in listen = '127.0.0.1:0'" in problems(
        [*cluster, "--listen", "127.0.0.1:0"]
    )
    assert "listen = '127.0.0.1:65534' (from flag --listen) leaves no room" in problems(
        [*cluster, "--listen", "127.0.0.1:65534"]
    )
    assert "advertise = 'a:65534' (from flag --advertise) leaves no room" in problems(
        [*cluster, "--listen", "127.0.0.1:5000", "--advertise", "a:65534"]
    )
    assert "metrics_listen = '127.0.0.1:65535' (from flag --metrics-listen)" in problems(
        [*cluster, "--listen", "127.0.0.1:5000", "--metrics-listen", "127.0.0.1:65535"]
    )
    settings = parse(
        [*cluster, "--listen", "127.0.0.1:65533", "--metrics-listen", "127.0.0.1:0"], {}
    )
    assert (settings.workers, settings.worker) == (2, None)


def test_worker_settings_derive_from_the_node(tmp_path: Path) -> None:
    from cps.server.workers import worker_settings

    secret = str(write(tmp_path / "secret", "s3cret"))
    node = parse(
        [
            *("--etcd-endpoints", "e:2379", "--cluster-secret-file", secret),
            *("--workers", "3", "--listen", "0.0.0.0:5000", "--advertise", "a.example:6000"),
            *("--metrics-listen", "127.0.0.1:9100", "--data-dir", str(tmp_path / "d")),
        ],
        {},
    )
    second = worker_settings(node, 1)
    assert second.node_name == "a.example:6000.w1"  # the node's name defaults as ever
    assert second.advertise == "a.example:6002"
    assert second.metrics_listen == "127.0.0.1:9101"
    assert second.data_dir == tmp_path / "d" / "worker-1"
    assert second.worker is not None
    assert (second.worker.index, second.worker.host) == (1, "a.example:6000")
    assert second.worker.listen == "0.0.0.0:5002"
    assert second.listen == "0.0.0.0:5000"  # shared with its siblings
    named = parse(
        [
            *("--etcd-endpoints", "e:2379", "--cluster-secret-file", secret, "--workers", "2"),
            *("--listen", "[::1]:5000", "--node-name", "n0", "--metrics-listen", "[::1]:0"),
        ],
        {},
    )
    first = worker_settings(named, 0)
    assert (first.node_name, first.advertise, first.metrics_listen) == (
        "n0.w0",
        "[::1]:5001",
        "[::1]:0",
    )
    assert first.worker is not None and first.worker.host == "n0"


# --- the authorization table (docs/security.md) ------------------------------

AUTH_TABLE = """
[roles.orders]
server = [{ prefix = "orders/", permission = "readwrite" }]
library = [{ prefix = "orders/", permission = "read" }]

[[roles.audit.server]]
prefix = ""
permission = "read"

[identities]
"CN=orders-1" = ["orders"]
"CN=auditor,O=Acme" = ["audit", "orders"]
"CN=nobody" = []
"""


def _client_tls(tmp_path: Path) -> list[str]:
    pem = {name: str(write(tmp_path / f"{name}.pem", name)) for name in ("cert", "key", "ca")}
    return ["--tls-cert", pem["cert"], "--tls-key", pem["key"], "--client-ca", pem["ca"]]


def test_authorization_table_is_loaded_at_start(tmp_path: Path) -> None:
    from cps.server.core.authorization import Access, Kind

    table = write(tmp_path / "auth.toml", AUTH_TABLE)
    settings = parse([*_client_tls(tmp_path)], {"CPS_AUTH_FILE": str(table)})
    authorization = settings.authorization
    assert authorization is not None
    assert set(authorization.identities) == {"CN=orders-1", "CN=auditor,O=Acme", "CN=nobody"}
    server, library = Kind.SERVER, Kind.LIBRARY
    rw = Access.READ | Access.WRITE
    assert authorization.allows("CN=orders-1", server, "orders/a", rw)
    assert not authorization.allows("CN=orders-1", server, "order", Access.READ)
    assert authorization.allows("CN=orders-1", library, "orders/a", Access.READ)
    assert not authorization.allows("CN=orders-1", library, "orders/a", Access.WRITE)
    # Grants of several roles add up; "" is every name.
    assert authorization.allows("CN=auditor,O=Acme", server, "anything", Access.READ)
    assert authorization.allows("CN=auditor,O=Acme", server, "orders/x", rw)
    assert not authorization.allows("CN=auditor,O=Acme", server, "anything", Access.WRITE)
    # Deny by default: no roles, or not in the table at all.
    for who in ("CN=nobody", "CN=stranger", ""):
        assert not authorization.allows(who, server, "orders/a", Access.READ)
    # A file given in the config file is relative to it, like every path.
    file = write(tmp_path / "cps.toml", '[tls]\nauth_file = "auth.toml"\n')
    assert parse([*_client_tls(tmp_path), "--config", str(file)], {}).authorization is not None
    assert parse([], {}).authorization is None


def test_authorization_table_needs_client_certificates(tmp_path: Path) -> None:
    table = write(tmp_path / "auth.toml", AUTH_TABLE)
    message = problems(["--auth-file", str(table)])
    assert f"auth_file = {str(table)!r} (from flag --auth-file) needs client_ca too" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "[roles.a]\nserver = [{ prefix = 'x', permission = 'rw' }]\n",
            "roles.a.server[0].permission = 'rw': expected read, write or readwrite",
        ),
        ("[roles.a]\nserver = [{ permission = 'read' }]\n", "roles.a.server[0] needs a prefix"),
        ("[roles.a]\nserver = [{ prefix = 'x' }]\n", "roles.a.server[0] needs a permission"),
        (
            "[roles.a]\nserver = [{ prefix = 'x', permission = 'read', prefx = 'y' }]\n",
            "unknown key 'prefx' in roles.a.server[0]",
        ),
        (
            "[roles.a]\nservers = []\n",
            "unknown key 'roles.a.servers' (expected server and library)",
        ),
        (
            "[roles.a]\nserver = { prefix = 'x', permission = 'read' }\n",
            "roles.a.server must be a list",
        ),
        (
            "[roles.a]\nserver = [{ prefix = 3, permission = 'read' }]\n",
            "roles.a.server[0].prefix = 3: expected a string",
        ),
        (
            "[identities]\n'CN=a' = ['writer']\n",
            "identities.\"CN=a\": unknown role 'writer' (roles: none)",
        ),
        ("[identities]\n'CN=a' = 'writer'\n", 'identities."CN=a" must be a list of role names'),
        ("[identites]\n", "unknown key 'identites' (expected roles and identities)"),
        ("roles = 3\n", "roles must be a table"),
        ("[roles\n", "not valid TOML"),
    ],
)
def test_bad_authorization_table_names_the_problem(
    tmp_path: Path, text: str, expected: str
) -> None:
    table = write(tmp_path / "auth.toml", text)
    message = problems([*_client_tls(tmp_path), "--auth-file", str(table)])
    assert f"auth_file = {str(table)!r} (from flag --auth-file): {expected}" in message


def test_bad_authorization_table_exits_2(tmp_path: Path) -> None:
    table = write(
        tmp_path / "auth.toml", "[roles.a]\nserver = [{ prefix = '', permission = 'all' }]\n"
    )
    done = subprocess.run(
        [SERVER, *_client_tls(tmp_path), "--auth-file", str(table)],
        capture_output=True,
        text=True,
        env=_clean_env(),
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert "roles.a.server[0].permission = 'all'" in done.stderr
