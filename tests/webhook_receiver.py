"""A webhook receiver on 127.0.0.1 for the alert tests: real HTTP, checking each signature.

Every ``POST`` is recorded (body, headers, whether ``X-Tgrag-Signature`` verifies with
``secret``).  ``fail_next(n, status)`` makes the next ``n`` requests fail with ``status`` (``0``:
drop the connection without answering), so retries and dead letters can be tested.

Run as a script (``python tests/webhook_receiver.py SECRET FILE``) it serves until killed and
appends one JSON line per request to ``FILE``, for tests whose receiver must outlive a process.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from rag.alerts.webhook import DELIVERY_HEADER, SIGNATURE_HEADER, verify  # noqa: E402


class WebhookReceiver:
    def __init__(self, secret: str | None = None, log: Path | None = None) -> None:
        self.secret = secret
        self.log = log
        self.requests: list[dict[str, Any]] = []
        self.attempts = 0
        self._fail: list[int] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    receiver.attempts += 1
                    status = receiver._fail.pop(0) if receiver._fail else 200
                if status == 0:
                    self.close_connection = True
                    self.connection.close()
                    return
                if status == 200:
                    receiver._record(self.path, dict(self.headers), body)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _record(self, path: str, headers: dict[str, str], body: bytes) -> None:
        signature = headers.get(SIGNATURE_HEADER, "")
        entry = {"path": path, "delivery": headers.get(DELIVERY_HEADER),
                 "signature": signature,
                 "verified": bool(self.secret) and verify(self.secret or "", body, signature),
                 "body": json.loads(body), "raw": body.decode()}
        with self._lock:
            self.requests.append(entry)
            if self.log is not None:
                with self.log.open("a", encoding="utf-8") as out:
                    out.write(json.dumps(entry, ensure_ascii=False) + "\n")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def fail_next(self, n: int, status: int = 500) -> None:
        with self._lock:
            self._fail += [status] * n

    def wait_for(self, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.requests) >= count:
                    return list(self.requests)
            time.sleep(0.05)
        raise AssertionError(f"{len(self.requests)} webhooks received, expected {count}")

    def start(self) -> WebhookReceiver:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def main() -> None:
    secret, log = sys.argv[1], Path(sys.argv[2])
    receiver = WebhookReceiver(secret, log).start()
    print(receiver.url, flush=True)
    receiver.thread.join()


if __name__ == "__main__":
    main()
