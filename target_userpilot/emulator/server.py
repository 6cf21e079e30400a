"""The running emulator: a threaded HTTP/1.1 server on loopback, and its inspection handle."""

from __future__ import annotations

import contextlib
import logging
import socket
import socketserver
import threading
import time
from http.server import HTTPServer
from typing import TYPE_CHECKING, Any

from target_userpilot.emulator.app import Handler
from target_userpilot.emulator.config import EmulatorConfig
from target_userpilot.emulator.deletions import Deletions
from target_userpilot.emulator.routes import ExtraRoutes
from target_userpilot.emulator.store import Store
from target_userpilot.emulator.track import Events
from target_userpilot.loopback import is_loopback

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from target_userpilot.emulator.deletions import Applied, DeletionsView
    from target_userpilot.emulator.store import JobRecord, RequestRecord

logger = logging.getLogger("target_userpilot.emulator")

_JOIN_SECONDS = 5.0


class _Server(HTTPServer):
    """One thread per connection, each tracked.

    Closing the server thereby also ends idle keep-alive connections and joins their threads.
    """

    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[Handler], family: int) -> None:
        self.address_family = family
        super().__init__(address, handler)
        self._lock = threading.Lock()
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._count = 0

    def server_bind(self) -> None:
        """Bind without HTTPServer's reverse DNS lookup of the host (slow on some machines)."""
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        name = host.decode() if isinstance(host, bytes) else str(host)
        self.server_name, self.server_port = name, int(port)

    def process_request(self, request: Any, client_address: Any) -> None:  # noqa: ANN401
        with self._lock:
            self._count += 1
            thread = threading.Thread(
                target=self._serve_connection,
                args=(request, client_address),
                name=f"userpilot-emulator-conn-{self._count}",
                daemon=True,
            )
            self._connections[request] = thread
        thread.start()

    def _serve_connection(self, request: Any, client_address: Any) -> None:  # noqa: ANN401
        try:
            self.finish_request(request, client_address)
        except Exception:  # a broken connection must not kill the server
            logger.debug("connection from %s ended with an error", client_address, exc_info=True)
        finally:
            self.shutdown_request(request)
            with self._lock:
                self._connections.pop(request, None)

    def handle_error(self, request: Any, client_address: Any) -> None:  # noqa: ANN401
        del request
        logger.debug("error serving %s", client_address)

    def close_connections(self) -> None:
        """End every open connection and wait for its thread."""
        with self._lock:
            open_now = list(self._connections.items())
        for sock, _ in open_now:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for _, thread in open_now:
            thread.join(_JOIN_SECONDS)


class Emulator:
    """A running emulator: its address, configuration, and a view of its state.

    Every inspection first advances the clock-driven state to now.
    """

    def __init__(self, store: Store, url: str, deletions: Deletions, events: Events) -> None:
        """Wrap a store (and its deletions and events) served at `url`."""
        self._store = store
        self._deletions = deletions
        self._events = events
        self.url = url

    @property
    def config(self) -> EmulatorConfig:
        """The configuration in force (see `set_faults`)."""
        return self._store.config

    def set_faults(self, **changes: Any) -> EmulatorConfig:  # noqa: ANN401 - field values vary
        """Change faults (or any setting but `seed`) at runtime; thread safe.

        Setting `fail_jobs` or `drop_submit_responses` restarts that counter. Jobs already
        submitted keep the rate, failure and rejected ids they were created with.
        """
        return self._store.set_faults(**changes)

    @property
    def users(self) -> dict[str, dict[str, Any]]:
        """user_id -> `{"user_id", "company_id"?, "metadata"}`, a copy."""
        return self._store.users()

    @property
    def companies(self) -> dict[str, dict[str, Any]]:
        """company_id -> `{"company_id", "metadata"}`, a copy."""
        return self._store.companies()

    @property
    def jobs(self) -> list[JobRecord]:
        """Every job, ours and foreign, oldest first."""
        return self._store.jobs()

    @property
    def requests(self) -> list[RequestRecord]:
        """Every request answered (or dropped), in order."""
        return self._store.requests()

    @property
    def deletions(self) -> DeletionsView:
        """Deletions scheduled (`pending`) and applied by a daily run, oldest first."""
        return self._deletions.view()

    @property
    def events(self) -> dict[str, Any]:
        """The Track API's events, oldest first, as `GET /_emulator/events` shows them."""
        return self._events.view()

    def run_daily_deletions(self) -> list[Applied]:
        """Userpilot's 02:00 UTC deletion batch, now: apply every pending deletion."""
        return self._deletions.run_now()

    def add_foreign_job(self, seconds: float) -> str:
        """Someone else's job holds the slot for `seconds` (after any running job); its id."""
        return self._store.add_foreign_job(seconds)

    def tick(self) -> None:
        """Advance the clock-driven state now (logs job transitions as they happen).

        Deletions scheduled before the latest 02:00 UTC are applied, as Userpilot's daily run.
        """
        self._store.advance()
        self._deletions.tick()


@contextlib.contextmanager
def serve(
    config: EmulatorConfig | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    allow_remote: bool = False,
    clock: Callable[[], float] | None = None,
) -> Iterator[Emulator]:
    """Run an emulator in a background thread; stop it, and every connection, on exit.

    Args:
        config: The emulated account's behaviour; defaults to `EmulatorConfig()`.
        host: Address to bind; loopback only unless `allow_remote`.
        port: Port to bind; 0 picks a free one (read it from `Emulator.url`).
        allow_remote: Permit a non-loopback `host`.
        clock: The account's clock in epoch seconds (default `time.time`); tests pass a fake
            one to drive jobs and the delete rate limit.

    Yields:
        The running emulator.
    """
    if not allow_remote and not is_loopback(host):
        msg = f"refusing to bind {host!r}: the emulator is a test server (loopback only)"
        raise ValueError(msg)
    store = Store(config or EmulatorConfig(), clock or time.time)
    deletions = Deletions(store)
    events = Events(store)
    extras = ExtraRoutes(store, deletions, events)
    handler = type("EmulatorHandler", (Handler,), {"store": store, "extras": extras})
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server = _Server((host, port), handler, family)
    bound_host, bound_port = server.server_name, server.server_port
    shown = f"[{bound_host}]" if family == socket.AF_INET6 else bound_host
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.05},
        name=f"userpilot-emulator-{bound_port}",
        daemon=True,
    )
    thread.start()
    logger.debug("emulator listening on %s:%s", shown, bound_port)
    try:
        yield Emulator(store, f"http://{shown}:{bound_port}", deletions, events)
    finally:
        server.shutdown()
        server.close_connections()
        server.server_close()
        thread.join(_JOIN_SECONDS)
        logger.debug("emulator on port %s stopped", bound_port)
