"""The models inbox: files dropped into `<models dir>/inbox/` are registered once they stop growing."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

# Names a copy in progress commonly has; a file is taken only once its size and mtime held still
# for one whole poll interval, these are never taken.
_PARTIAL_SUFFIXES = (".part", ".tmp", ".crdownload", ".partial")


class ModelInbox:
    """Polls the inbox folder on a thread of its own; `take(path)` registers one stable file (and
    moves it out of the inbox). A file that fails to register is logged and left aside in
    `inbox/failed/`, so it is not retried forever."""

    def __init__(self, folder: Path, take: Callable[[Path], object], interval: float = 1.0) -> None:
        self.folder = Path(folder)
        self.take = take
        self.interval = interval
        self._seen: dict[Path, tuple[int, int]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._run, name="models-inbox", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.scan()
            except Exception:
                log.exception("models inbox scan failed; will retry")

    def scan(self) -> list[Path]:
        """One look at the folder: take the files whose size and mtime did not change since the last
        look. Returns the files taken."""
        current: dict[Path, tuple[int, int]] = {}
        for path in sorted(self.folder.iterdir()) if self.folder.is_dir() else []:
            if (
                not path.is_file()
                or path.name.startswith(".")
                or path.name.lower().endswith(_PARTIAL_SUFFIXES)
            ):
                continue
            st = path.stat()
            current[path] = (st.st_size, st.st_mtime_ns)
        stable = [p for p, sig in current.items() if self._seen.get(p) == sig]
        self._seen = {p: sig for p, sig in current.items() if p not in stable}
        for path in stable:
            if self._stop.is_set():
                break
            try:
                self.take(path)
            except Exception as exc:
                failed = self.folder / "failed"
                failed.mkdir(exist_ok=True)
                if path.exists():
                    path.replace(failed / path.name)
                log.error(
                    "a file in the models inbox could not be registered",
                    extra={"file": str(path), "error": getattr(exc, "detail", None) or str(exc)},
                )
        return stable
