"""``tunesvc dashboard``: optuna-dashboard's app on tunesvc's storage and artifact store, served
by a small threaded WSGI server that binds to 127.0.0.1 unless told otherwise."""

from __future__ import annotations

import socketserver
from dataclasses import dataclass
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import optuna

from tunesvc._errors import TunesvcError

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


def make_dashboard(
    storage: optuna.storages.RDBStorage, artifacts: Path, *, shown_as: str,
    host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
) -> Dashboard:
    """Bind optuna-dashboard's app for ``storage`` and the artifact store at ``artifacts`` to
    ``host:port`` (``port=0`` picks a free port); :class:`TunesvcError` if the address cannot be
    bound. ``shown_as`` names the storage in messages (no password)."""
    # optuna-dashboard loads scikit-learn and more: only the dashboard command pays for it.
    import optuna_dashboard
    from optuna.artifacts import FileSystemArtifactStore

    app = optuna_dashboard.wsgi(storage, artifact_store=FileSystemArtifactStore(str(artifacts)))
    try:
        server = make_server(host, port, app, server_class=_Server, handler_class=_QuietHandler)
    except OSError as e:
        raise TunesvcError(f"cannot listen on {host}:{port} ({e.strerror}); pick another "
                           "--port or --host") from None
    bound = server.server_address[1]
    shown = f"[{host}]" if ":" in host else host
    return Dashboard(server, f"http://{shown}:{bound}/dashboard", shown_as, artifacts)
