"""An HTTP gateway on the client's side of a private inference service (``covault gateway``).

It listens on a loopback address only and forwards each ``POST /predict`` (JSON ``{"rows":
[{"column": value, ...}, ...]}`` naming the raw columns of the model's job, or ``[[...], ...]``
for a model that takes its raw numbers as they are; ``"prepared": true`` for rows already in
the model's inputs; header ``Authorization: Bearer TOKEN``) to one open :class:`Client`, one
request at a time; the answer is ``{"model", "rows", "predictions"}``. Each connection has its
own thread and :data:`REQUEST_TIMEOUT` seconds for each read, so that one that stops in the
middle of a request holds up no other. Malformed rows (or JSON nested too deep) get 400 with the
client's error (nothing was sent to the service), as does a query the service refused (its rows,
for instance more than its ``--max-query-rows``); a failed service, or one that sent something
malformed, gets 502 naming the party, and the gateway goes on: its next request connects again
(or gets 502 naming the party that is not back within the client's timeout).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from covault.errors import CovaultError, EncodingError, PeerError, ShapeError
from covault.serving.wire import QueryRefused

MAX_BODY = 16 << 20  # bytes of one request
REQUEST_TIMEOUT = 10.0  # seconds for each read of a request (a stalled connection is closed)
BODY = (
    'the body must be JSON {"rows": [{"column": value, ...}, ...]} (the raw columns by name) or '
    '{"rows": [[number, ...], ...]}, with "prepared": true for rows already in the model\'s inputs'
)


class GatewayServer(ThreadingHTTPServer):
    """The HTTP server of one gateway: ``client`` answers, ``token`` admits; ``failure``: an
    error that stopped it (None so far: a failed service gets 502 and does not stop it)."""

    def __init__(self, client: Any, host: str, port: int, token: str) -> None:
        if not ipaddress.ip_address(host).is_loopback:
            raise CovaultError(f"gateway of client {client.party!r}: listens on loopback only, got {host!r}")
        super().__init__((host, port), _Handler)
        self.client, self.token = client, token
        self.lock = threading.Lock()  # one request at a time to the client
        self.failure: BaseException | None = None


class _Handler(BaseHTTPRequestHandler):
    server: GatewayServer
    timeout = REQUEST_TIMEOUT

    def log_message(self, format: str, *args: Any) -> None:  # no request log on stderr
        return

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._reply(405, {"error": 'POST JSON {"rows": [[...], ...]} to /predict'})

    def do_POST(self) -> None:
        srv = self.server
        if self.path != "/predict":
            return self._reply(404, {"error": f"no such endpoint {self.path!r} (POST /predict)"})
        given = self.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {srv.token}".encode()):
            return self._reply(401, {"error": "missing or wrong bearer token"})
        try:
            size = int(self.headers.get("Content-Length", "-1"))
        except ValueError:
            size = -1
        if not 0 <= size <= MAX_BODY:
            return self._reply(
                413, {"error": f"the body must have a Content-Length of at most {MAX_BODY} bytes"}
            )
        try:
            body = json.loads(self.rfile.read(size))  # a stalled body: the read timeout, below
            rows, prepared = body["rows"], body.get("prepared", False)
            if not isinstance(rows, list) or not isinstance(prepared, bool):  # never a file path
                raise TypeError("rows")
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
            return self._reply(400, {"error": BODY})
        except OSError as exc:  # the body stalled past the read timeout, or the socket broke
            return self._reply(408, {"error": f"the request body did not arrive ({type(exc).__name__})"})
        try:
            with srv.lock:
                out = srv.client.predict(rows, prepared=prepared)
        except (ShapeError, EncodingError, RecursionError) as exc:
            return self._reply(400, {"error": f"{type(exc).__name__}: {exc}"})
        except PeerError as exc:  # the next request connects again (Client.predict)
            self._reply(502, {"error": f"{type(exc).__name__}: {exc}", "party": exc.party})
            return None
        except QueryRefused as exc:  # the rows' (or this client's) fault
            return self._reply(400, {"error": f"{type(exc).__name__}: {exc}", "party": exc.party})
        except CovaultError as exc:  # a malformed answer, a refused link
            party = getattr(exc, "party", None)
            return self._reply(502, {"error": f"{type(exc).__name__}: {exc}", "party": party})
        self._reply(200, {"model": srv.client.model_name, "rows": len(out), "predictions": out.tolist()})
        return None
