"""Helper for the abuse and fault tests: a real API server in a subprocess on 127.0.0.1.

Not a test module (no ``test_`` prefix).  :class:`LiveServer` runs ``tgrag serve`` or
``uvicorn api.app:app`` over its own data folder (embedded Qdrant and a real embedded
redis-server child), with only the ``TGRAG_*`` variables it is given and its own ``TMPDIR``, so
a test can look at the temp files, the memory and the child processes of the server it drives.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def process_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def redis_servers_of(data_dir: Path) -> list[int]:
    """Pids of redis-server processes working in ``data_dir/redis`` (whoever started them)."""
    pids = []
    target = str((data_dir / "redis").resolve())
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if b"redis-server" in cmdline and cwd == target and process_alive(int(entry.name)):
            pids.append(int(entry.name))
    return pids


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class LiveServer:
    """One server process: ``tgrag serve`` (``command="serve"``) or ``uvicorn api.app:app``."""

    def __init__(self, root: Path, env: dict[str, str] | None = None, *,
                 command: str = "serve", host: str = "127.0.0.1", port: int | None = None,
                 data_dir: Path | None = None) -> None:
        self.root = root
        self.data_dir = data_dir or root / "data"
        self.tmp = root / "tmp"  # the server's TMPDIR: upload temp files land here
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.port = port or free_port(host if host != "0.0.0.0" else "127.0.0.1")
        self.command = command
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("TGRAG_")}
        self.env.update(TGRAG_DATA_DIR=str(self.data_dir), TGRAG_SYNC_INTERVAL="0",
                        TMPDIR=str(self.tmp), PYTHONUNBUFFERED="1")
        self.env.update(env or {})
        self.log_path = root / f"server-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        host = "127.0.0.1" if self.host == "0.0.0.0" else self.host
        return f"http://{host}:{self.port}"

    def argv(self) -> list[str]:
        if self.command == "serve":
            # -c, not the console script: the cwd (this checkout) comes first on sys.path.
            return [sys.executable, "-c", "from api.cli import main; main()", "serve",
                    "--host", self.host, "--port", str(self.port)]
        return [sys.executable, "-m", "uvicorn", "api.app:app", "--host", self.host,
                "--port", str(self.port)]

    def start(self, timeout: float = 120) -> LiveServer:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(self.argv(), cwd=REPO, env=self.env, stdout=log,
                                         stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}: {self.log()}")
            try:
                if httpx.get(self.base + "/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.kill()
        raise AssertionError(f"server did not start: {self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM (what ``docker stop`` and systemd send), then wait; the exit status."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"server ignored SIGTERM: {self.log()}") from None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)

    def cleanup(self) -> None:
        """Stop the server and any redis-server left in its data folder (tests must not leak)."""
        self.kill()
        for pid in redis_servers_of(self.data_dir):
            os.kill(pid, signal.SIGKILL)

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.base, timeout=kwargs.pop("timeout", 30), **kwargs)

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop()
        finally:
            self.cleanup()


def raw_request(host: str, port: int, head: str, body: bytes = b"", *,
                timeout: float = 5) -> tuple[int | None, bytes, float]:
    """Send a request head (and maybe part of a body) on a raw socket; return the status (None
    when the server answered nothing within ``timeout``), what it sent, and the seconds it took.

    Used to show the server answers *before* reading a body it was promised."""
    started = time.monotonic()
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(head.encode("latin-1") + body)
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
            head_end = data.find(b"\r\n\r\n")
            if head_end >= 0:
                length = 0
                for line in data[:head_end].split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip())
                while len(data) < head_end + 4 + length:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    data += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    seconds = time.monotonic() - started
    if not data.startswith(b"HTTP/1.1 "):
        return None, data, seconds
    return int(data[9:12]), data, seconds
