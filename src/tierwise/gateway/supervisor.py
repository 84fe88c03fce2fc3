"""``tierwise serve --workers N``: uvicorn's supervisor, whose workers drain.

``tierwise serve`` execs ``python -m tierwise.gateway.supervisor OPTIONS_JSON``: a small
process (uvicorn imported, not the gateway) that binds the socket and runs uvicorn's
``Multiprocess`` supervisor — restarts of a worker that dies, SIGHUP / SIGTTIN / SIGTTOU as
uvicorn has them — with :class:`DrainingWorker` processes. Each worker builds its app from
the environment (``TIERWISE_CONFIG`` / ``TIERWISE_LEDGER_URL``) and runs the
:class:`~tierwise.gateway.drain.DrainingServer`, so SIGTERM or Ctrl-C drains every worker as
it drains one process; a second signal, which the supervisor passes on, skips the wait.

Ctrl-C in a terminal reaches every process of the group: workers ignore SIGINT, the
supervisor turns it into one SIGTERM each, so a worker's first signal is not also its second.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from socket import socket

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import multiprocess

FACTORY = "tierwise.gateway.serving:app_from_environment"
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

logger = logging.getLogger("uvicorn.error")


class DrainingWorker(multiprocess.Process):
    """One worker process: its own app and a draining server on the shared socket."""

    def target(self, sockets: list[socket] | None = None) -> None:  # runs in the worker
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor passes Ctrl-C on
        threading.Thread(target=self.always_pong, daemon=True).start()
        from tierwise.errors import TierwiseError  # noqa: PLC0415 (the worker's imports)
        from tierwise.gateway.serving import worker_server  # noqa: PLC0415

        try:
            self._server = worker_server(self.config)
        except TierwiseError as exc:
            logger.error("worker [%d] cannot start: %s", os.getpid(), exc)
            sys.exit(STARTUP_FAILURE)  # the supervisor stops instead of restarting it
        self._server.run(sockets)

    def pong(self) -> None:
        """Answer the supervisor's health check: has the server started?"""
        self.child_conn.recv()
        self.child_conn.send(self._server is not None and self._server.started)


class DrainingSupervisor(multiprocess.Multiprocess):
    """uvicorn's supervisor; on stopping, it waits for the workers' drain."""

    def join_all(self) -> None:
        """Wait for every worker; a second SIGTERM/SIGINT is passed on (skip the drain)."""
        while any(worker.process.is_alive() for worker in self.processes):
            if self._second_signal():
                for worker in self.processes:
                    if worker.pid is not None and worker.process.is_alive():
                        os.kill(worker.pid, signal.SIGTERM)
            time.sleep(0.1)
        super().join_all()

    def _second_signal(self) -> bool:
        """Signals queued since the first were handled: is one of them a stop signal?"""
        stop = False
        while self.signal_queue:
            stop = self.signal_queue.pop() in STOP_SIGNALS or stop
        return stop


def main(options_json: str) -> None:
    """Supervise ``options["workers"]`` draining workers; ``options``: uvicorn.Config's."""
    config = uvicorn.Config(FACTORY, factory=True, **json.loads(options_json))
    # uvicorn's supervisor makes every worker (at start, on a restart, on SIGHUP or SIGTTIN)
    # with its module's ``Process``: in this process, the supervisor, that is DrainingWorker.
    multiprocess.Process = DrainingWorker  # type: ignore[misc]
    supervisor = DrainingSupervisor(config, sockets=[config.bind_socket()])
    supervisor.run()
    if any(worker.exitcode == STARTUP_FAILURE for worker in supervisor.processes):
        sys.exit(STARTUP_FAILURE)  # as one process does: a worker could not start


if __name__ == "__main__":
    main(sys.argv[1])
