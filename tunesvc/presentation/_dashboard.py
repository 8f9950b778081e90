"""``tunesvc dashboard``: optuna-dashboard on tunesvc's storage and artifact store.

The storage is opened the tunesvc way (same URL resolution, engine settings and error
messages), so an unreachable database fails with its URL (no password) and the reason before a
server starts. The server binds to 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import socketserver
from dataclasses import dataclass
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import optuna_dashboard
from optuna.artifacts import FileSystemArtifactStore

from tunesvc._errors import StorageError, TunesvcError
from tunesvc.storage._database import artifacts_dir, open_storage, redact, storage_errors

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass  # one line per request drowns what matters; errors still reach stderr


@dataclass
class Dashboard:
    """A dashboard server ready to serve: ``serve_forever()`` blocks, ``shutdown()`` stops it."""

    server: WSGIServer
    url: str
    storage: str
    artifacts: Path

    serving: bool = False

    def serve_forever(self) -> None:
        self.serving = True
        try:
            self.server.serve_forever()
        finally:
            self.serving = False

    def shutdown(self) -> None:
        if self.serving:  # shutdown() waits for a serve_forever loop that must be running
            self.server.shutdown()
        self.server.server_close()


def make_dashboard(url: str, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> Dashboard:
    """Open the storage and bind the server; raise :class:`StorageError` if the storage cannot be
    used and :class:`TunesvcError` if the address cannot be bound. ``port=0`` picks a free port."""
    storage = open_storage(url)
    with storage_errors(url):
        storage.get_all_studies()  # reach the database now, not on the first page load
    folder = artifacts_dir(url)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StorageError(f"artifact folder {folder}: cannot create it ({e.strerror})") from None
    app = optuna_dashboard.wsgi(storage, artifact_store=FileSystemArtifactStore(str(folder)))
    try:
        server = make_server(host, port, app, server_class=_Server, handler_class=_QuietHandler)
    except OSError as e:
        raise TunesvcError(f"cannot listen on {host}:{port} ({e.strerror}); pick another "
                           "--port or --host") from None
    bound = server.server_address[1]
    shown = f"[{host}]" if ":" in host else host
    return Dashboard(server, f"http://{shown}:{bound}/dashboard", redact(url), folder)
