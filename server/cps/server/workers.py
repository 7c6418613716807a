"""A node of several worker processes, ``--workers N`` (N > 1): docs/workers.md.

One cps-server process uses one core (the GIL). With ``--workers N`` the
process started is a **supervisor** that serves nothing itself: it holds
the node's data directory (its lock, so a second node on it is refused),
checks that the node's ports are free, and runs N workers, each
``python -m cps.server.main`` with the same arguments and environment plus
``CPS_INTERNAL_WORKER`` (index, supervisor pid, a pipe to report on). Worker
i is a member of the cluster of its own:

- named ``<node>.w<i>``, on host ``<node>`` (placement puts at most one
  replica of a checkpoint on a host);
- its store in ``<data-dir>/worker-<i>``;
- listening on the node's address, shared with its siblings
  (SO_REUSEPORT: the kernel spreads client connections over them), and on
  an address of its own, the node's port + 1 + i, which it advertises, so
  that peers and forwarded calls reach this very worker;
- its metrics on the metrics port + i.

The supervisor forwards SIGTERM and SIGINT to the workers and waits for
their drain; a worker that dies is started again (a new member
incarnation) after a backoff; a worker that cannot start at all (a port
taken, a store it cannot open) makes the node exit 1 with one line. A
worker dies with its supervisor (PR_SET_PDEATHSIG; elsewhere a watchdog
thread).

Only a cluster node has workers (config.py refuses N > 1 without etcd): a
node alone keeps its directory in the memory of its one process.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from types import FrameType

from .config import Settings, WorkerRole, advertise_of, join_address, split_address
from .storage.sqlite_store import FILE_NAME, StoreError, lock_data_dir

log = logging.getLogger("cps.workers")

# The hidden setting of a worker (never a flag: only a supervisor sets it).
WORKER_ENV = "CPS_INTERNAL_WORKER"
# A worker that has not listened after this long failed to start.
START_TIMEOUT_S = 60.0
POLL_S = 0.05
# Backoff before a worker that died is started again: from the first, doubled
# each time it dies again soon, back to the first once it ran STABLE_S.
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 10.0
STABLE_S = 30.0
# Beyond --grace-seconds, the time a worker may take to stop (leave the
# cluster, close its store) before it is killed.
STOP_MARGIN_S = 10.0
# The supervisor's port checks wait this long for a port to be let go (the
# workers of a node killed a moment ago).
PORT_WAIT_S = 2.0
_PR_SET_PDEATHSIG = 1


# --- the worker's side -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Assignment:
    """What the supervisor tells a worker: its index, the supervisor's pid
    (a worker whose parent is not it stops), and the pipe it reports on."""

    index: int
    supervisor: int
    status_fd: int

    def encode(self) -> str:
        return json.dumps(
            {"index": self.index, "supervisor": self.supervisor, "status_fd": self.status_fd}
        )


def assignment_of(environ: Mapping[str, str]) -> Assignment | None:
    """The worker's assignment, or None when this process is not a worker."""
    text = environ.get(WORKER_ENV)
    if not text:
        return None
    try:
        data = json.loads(text)
        return Assignment(int(data["index"]), int(data["supervisor"]), int(data["status_fd"]))
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"{WORKER_ENV} is not a worker's assignment: {text!r}") from None


def worker_settings(settings: Settings, index: int) -> Settings:
    """The settings of worker ``index`` of the node ``settings`` describe
    (its listen port is fixed: config.py checks it)."""
    host, port = split_address(settings.listen)
    node_advertise = settings.advertise or advertise_of(settings.listen, port)
    node = settings.node_name or node_advertise
    advertise_host, advertise_port = split_address(node_advertise)
    metrics = settings.metrics_listen
    if metrics:
        metrics_host, metrics_port = split_address(metrics)
        metrics = join_address(metrics_host, metrics_port + index if metrics_port else 0)
    return replace(
        settings,
        data_dir=settings.data_dir / f"worker-{index}",
        node_name=f"{node}.w{index}",
        advertise=join_address(advertise_host, advertise_port + 1 + index),
        metrics_listen=metrics,
        worker=WorkerRole(index, node, join_address(host, port + 1 + index)),
    )


def die_with(supervisor: int) -> bool:
    """Make this worker die when its supervisor does; False when it is
    already gone (or was never this process's parent)."""
    guarded = False
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        guarded = libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    if os.getppid() != supervisor:  # it died before prctl took effect
        return False
    if not guarded:
        threading.Thread(
            target=_watch_parent, args=(supervisor,), daemon=True, name="cps-supervisor-watch"
        ).start()
    return True


def _watch_parent(supervisor: int) -> None:
    while os.getppid() == supervisor:
        time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGKILL)  # as PR_SET_PDEATHSIG would


class StatusPipe:
    """The worker's end of its status pipe: one line, ``ready`` once it
    listens, or ``error <why>`` when it cannot start."""

    def __init__(self, fd: int) -> None:
        self.fd: int | None = fd

    def ready(self) -> None:
        self._say("ready")

    def error(self, why: str) -> bool:
        """Tell the supervisor why this worker could not start; False when
        it had said it was ready already (then the error is the caller's to
        print)."""
        return self._say("error " + " ".join(why.split()))

    def _say(self, line: str) -> bool:
        fd, self.fd = self.fd, None
        if fd is None:
            return False
        with contextlib.suppress(OSError):
            os.write(fd, line.encode() + b"\n")
        with contextlib.suppress(OSError):
            os.close(fd)
        return True


# --- the supervisor ------------------------------------------------------------


@dataclass
class _Worker:
    index: int
    popen: subprocess.Popen[bytes] | None = None
    status_fd: int | None = None  # the supervisor's end of the status pipe
    said: bytes = b""
    ready: bool = False
    started_at: float = 0.0
    starts: int = 0
    backoff: float = BACKOFF_FIRST_S
    start_at: float | None = None  # when to start it again (it died)

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    @property
    def pid(self) -> int:
        return 0 if self.popen is None else self.popen.pid


class SupervisorError(Exception):
    """The node cannot run: one line says why."""


class Supervisor:
    """Runs the workers of one node until SIGTERM or SIGINT (``run``)."""

    def __init__(self, settings: Settings, argv: Sequence[str]) -> None:
        self.settings = settings
        self.argv = list(argv)
        self.workers = [_Worker(i) for i in range(settings.workers)]
        self._signal: int | None = None

    def run(self) -> int:
        """0 after a stop on SIGTERM/SIGINT; 1 (and one line on stderr) when
        the node cannot run."""
        try:
            lock = self._take_data_dir()
        except SupervisorError as error:
            print(f"cps-server: {error}", file=sys.stderr)
            return 1
        try:
            return self._run()
        except SupervisorError as error:
            self._stop(signal.SIGTERM)
            print(f"cps-server: {error}", file=sys.stderr)
            return 1
        finally:
            for worker in self.workers:
                self._close_status(worker)
            os.close(lock)

    def _run(self) -> int:
        self._check_ports()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        for worker in self.workers:
            self._start(worker)
        self._wait_started()
        if self._signal is None:
            log.info(
                "workers serving",
                extra={
                    "workers": len(self.workers),
                    "pids": [worker.pid for worker in self.workers],
                    "listen": self.settings.listen,
                },
            )
            self._watch()
        assert self._signal is not None
        return self._stop(self._signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._signal is None:
            self._signal = signum

    # -- start --------------------------------------------------------------------

    def _take_data_dir(self) -> int:
        """The node's data directory, locked as a node's store locks it."""
        data_dir = self.settings.data_dir
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise SupervisorError(f"cannot create data directory {data_dir}: {error}") from error
        try:
            lock = lock_data_dir(data_dir)
        except StoreError as error:
            raise SupervisorError(str(error)) from None
        if (data_dir / FILE_NAME).exists():
            log.warning(
                "the data directory holds the store of a node of one process: its library "
                "checkpoints are not served by the workers (each has its own store)",
                extra={"path": str(data_dir / FILE_NAME)},
            )
        return lock

    def _check_ports(self) -> None:
        """Every address the workers will listen on is free (the node's own
        included: the workers share it with SO_REUSEPORT, which would let them
        share it with another node too)."""
        settings = self.settings
        addresses = [(settings.listen, "the node's address")]
        for worker in self.workers:
            own = worker_settings(settings, worker.index)
            assert own.worker is not None
            addresses.append((own.worker.listen, f"worker {worker.index}'s own address"))
            if own.metrics_listen and split_address(own.metrics_listen)[1] != 0:
                addresses.append((own.metrics_listen, f"worker {worker.index}'s metrics"))
        for address, what in addresses:
            _check_free(address, what)

    def _start(self, worker: _Worker) -> None:
        read_end, write_end = os.pipe()
        os.set_blocking(read_end, False)
        assignment = Assignment(worker.index, os.getpid(), write_end)
        env = {**os.environ, WORKER_ENV: assignment.encode()}
        try:
            worker.popen = subprocess.Popen(
                [sys.executable, "-m", "cps.server.main", *self.argv],
                env=env,
                stdin=subprocess.DEVNULL,
                pass_fds=(write_end,),
            )
        except OSError as error:
            os.close(read_end)
            raise SupervisorError(f"cannot start worker {worker.index}: {error}") from error
        finally:
            os.close(write_end)
        self._close_status(worker)
        worker.status_fd, worker.said, worker.ready = read_end, b"", False
        worker.started_at = time.monotonic()
        worker.starts += 1
        worker.start_at = None
        log.info(
            "worker started",
            extra={"worker": worker.index, "pid": worker.pid, "start": worker.starts},
        )

    def _wait_started(self) -> None:
        """Until every worker listens; SupervisorError when one cannot."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while self._signal is None:
            for worker in self.workers:
                why = self._failed_start(worker)
                if why is not None:
                    raise SupervisorError(f"worker {worker.index} could not start: {why}")
            if all(worker.ready for worker in self.workers):
                return
            if time.monotonic() > deadline:
                late = [w.index for w in self.workers if not w.ready]
                raise SupervisorError(f"workers {late} did not listen in {START_TIMEOUT_S:.0f} s")
            time.sleep(POLL_S)

    def _failed_start(self, worker: _Worker) -> str | None:
        """Read what the worker said; why it could not start, if it could not."""
        self._read_status(worker)
        if worker.ready:
            return None
        if worker.said.startswith(b"error "):
            return worker.said[len(b"error ") :].decode(errors="replace").strip()
        assert worker.popen is not None
        code = worker.popen.poll()
        if code is None:
            return None
        return f"it exited ({_exit_text(code)}) before it listened"

    def _read_status(self, worker: _Worker) -> None:
        fd = worker.status_fd
        if fd is None:
            return
        try:
            chunk = os.read(fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        worker.said += chunk
        if worker.said.startswith(b"ready\n"):
            worker.ready = True
        if not chunk or b"\n" in worker.said:
            self._close_status(worker)

    @staticmethod
    def _close_status(worker: _Worker) -> None:
        if worker.status_fd is not None:
            os.close(worker.status_fd)
            worker.status_fd = None

    # -- run ----------------------------------------------------------------------

    def _watch(self) -> None:
        """Start again every worker that dies, until a signal to stop."""
        while self._signal is None:
            now = time.monotonic()
            for worker in self.workers:
                if worker.start_at is not None:
                    if now >= worker.start_at:
                        self._start(worker)
                    continue
                if worker.status_fd is not None:
                    self._read_status(worker)
                    if worker.ready:
                        log.info("worker serving again", extra={"worker": worker.index})
                    elif worker.said.startswith(b"error "):
                        log.error(
                            "worker could not start",
                            extra={"worker": worker.index, "why": self._failed_start(worker)},
                        )
                assert worker.popen is not None
                code = worker.popen.poll()
                if code is not None:
                    self._died(worker, code, now)
            time.sleep(POLL_S)

    def _died(self, worker: _Worker, code: int, now: float) -> None:
        if now - worker.started_at >= STABLE_S:
            worker.backoff = BACKOFF_FIRST_S
        log.error(
            "worker exited: starting it again",
            extra={
                "worker": worker.index,
                "pid": worker.pid,
                "exit": _exit_text(code),
                "after_seconds": round(now - worker.started_at, 3),
                "backoff_seconds": worker.backoff,
            },
        )
        self._close_status(worker)
        worker.start_at = now + worker.backoff
        worker.backoff = min(worker.backoff * 2, BACKOFF_MAX_S)

    # -- stop ---------------------------------------------------------------------

    def _stop(self, signum: int) -> int:
        """Hand the signal on, wait for the workers' drain; kill what is left."""
        log.info("stopping workers", extra={"signal": signal.Signals(signum).name})
        for worker in self.workers:
            if worker.running:
                assert worker.popen is not None
                with contextlib.suppress(ProcessLookupError):
                    worker.popen.send_signal(signum)
        deadline = time.monotonic() + self.settings.grace_seconds + STOP_MARGIN_S
        while any(worker.running for worker in self.workers) and time.monotonic() < deadline:
            time.sleep(POLL_S)
        killed = [worker for worker in self.workers if worker.running]
        for worker in killed:
            assert worker.popen is not None
            log.error("worker did not stop: killed", extra={"worker": worker.index})
            worker.popen.kill()
        for worker in self.workers:
            if worker.popen is not None:
                worker.popen.wait()
        log.info("stopped")
        return 1 if killed else 0


def _exit_text(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-code).name}"
        return f"signal {-code}"
    return f"code {code}"


def _check_free(address: str, what: str) -> None:
    """SupervisorError unless ``address`` can be listened on now (waiting a
    little for a port a killed process is letting go)."""
    host, port = split_address(address)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as error:
        raise SupervisorError(f"cannot listen on {address} ({what}): {error}") from None
    deadline = time.monotonic() + PORT_WAIT_S
    for family, kind, proto, _, sockaddr in infos:
        while True:
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind(sockaddr)
                    break
                except OSError as error:
                    if time.monotonic() > deadline:
                        raise SupervisorError(
                            f"cannot listen on {address} ({what}): {error.strerror}"
                        ) from None
            time.sleep(0.1)
