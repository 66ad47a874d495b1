"""The in-process Huey queue (SQLite storage) and its consumer threads."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from huey import SqliteHuey, crontab
from huey.consumer import Consumer

log = logging.getLogger(__name__)


class _InProcessConsumer(Consumer):
    """Huey's consumer without signal handlers: the server owns signals, and they can only be
    installed from the main thread anyway."""

    def _set_signal_handlers(self) -> None:
        pass


class JobQueue:
    """Huey only carries "job X has work" signals. A task dequeued and then lost in a crash costs
    nothing: at start-up every queued or running job in DuckDB is signalled again."""

    def __init__(
        self,
        path: Path,
        run_job: Callable[[str], None],
        workers: int,
        on_tick: Callable[[], None] | None = None,
        shutdown_timeout: float = 30.0,
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.huey = SqliteHuey(name="appliance", filename=str(path), results=False)
        self._workers = workers
        self._shutdown_timeout = shutdown_timeout
        self._consumer: Consumer | None = None

        @self.huey.task(name="run_job")
        def run_job_task(job_id: str) -> None:
            run_job(job_id)

        self._task = run_job_task

        if on_tick is not None:
            # Scheduled source syncs: each minute, Huey's scheduler asks which syncs are due.
            @self.huey.periodic_task(crontab(minute="*"), name="schedule_tick")
            def schedule_tick_task() -> None:
                try:
                    on_tick()
                except Exception:
                    log.exception("scheduled work failed; will try again next minute")

    def signal(self, job_id: str) -> None:
        self._task(job_id)

    def signalled(self) -> set[str]:
        """The job ids with a signal waiting in the queue (not yet taken by a worker)."""
        return {t.args[0] for t in self.huey.pending() if t.name.endswith("run_job") and t.args}

    def start(self) -> None:
        self._consumer = _InProcessConsumer(
            self.huey,
            workers=self._workers,
            worker_type="thread",
            periodic=True,
            initial_delay=0.05,
            backoff=1.5,
            # Workers poll SQLite; a short ceiling keeps an idle server quick to pick up new jobs.
            max_delay=0.25,
            check_worker_health=False,
            shutdown_timeout=self._shutdown_timeout,
        )
        self._consumer.start()

    def stop(self) -> None:
        """Wait (up to the shutdown timeout) for the jobs in hand to reach a group boundary, so
        the parser, models and database they use are not closed under them."""
        if self._consumer is not None:
            self._consumer.stop(graceful=True)
            self._consumer = None
        self.huey.storage.close()
