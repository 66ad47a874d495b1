"""Opening a generation on the first healthy model of a list: fallbacks until the first token, never after."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from appliance.errors import ApplianceError, InvalidInput, NotFound, NotReady
from appliance.models.breaker import Breakers
from appliance.models.pool import ModelLoading, NoRoom
from appliance.models.router import RouteDecision
from appliance.models.runtime import GenerationParams, TokenDelta, TokenStream
from appliance.models.served import ServedModel
from appliance.models.slots import Cancelled, QueueFull

log = logging.getLogger(__name__)

_WATCH_S = 0.02  # how often the first-token watch looks at its deadline and the caller's cancel

# model name, timeout in seconds (None: the policy's own), cancel, on_position -> the loaded model
GetModel = Callable[[str, threading.Event | None, Callable[[int], None] | None], ServedModel]
# the model -> (its prompt, whatever the caller needs with it: the chat plan, its parameters)
Build = Callable[[ServedModel], tuple[str, Any, GenerationParams]]
# model, kind of failure ("load", "first_token", "generation", "timeout", "circuit_open")
OnError = Callable[[str, str], None]


@dataclass(frozen=True, slots=True)
class Timeouts:
    first_token_s: float | None = None  # from the slot to the first token
    total_s: float | None = None  # the whole generation, from the slot


@dataclass(slots=True)
class Opened:
    served: ServedModel
    prompt: str
    extra: Any
    stream: TokenStream  # starts with the first delta, already generated
    decision: RouteDecision


class _Failed(Exception):
    """One candidate could not start: try the next."""

    def __init__(self, why: str, kind: str | None, error: BaseException | None) -> None:
        super().__init__(why)
        self.why, self.kind, self.error = why, kind, error


def open_first(
    decision: RouteDecision,
    get: GetModel,
    build: Build,
    breakers: Breakers,
    timeouts: Timeouts,
    cancel: threading.Event | None = None,
    on_position: Callable[[int], None] | None = None,
    on_error: OnError | None = None,
) -> Opened:
    """Try `decision.candidates` in order until one yields its first token.

    A candidate is skipped while its circuit breaker is open. A load that fails, an error before the
    first token, or no first token within `timeouts.first_token_s` count as failures of that model
    (its breaker hears them) and the next candidate is tried; a cold load that outlasts the load
    timeout, a full queue, a full memory budget or a request the model cannot serve move on without
    blaming it. The last candidate's error is raised as it is. Once the first token exists the
    stream is the caller's: an error after it ends the stream, it never switches model.
    """
    candidates: Sequence[str] = decision.candidates or (decision.model,)
    tried: list[str] = []
    last_error: BaseException | None = None
    for i, name in enumerate(candidates):
        last = i == len(candidates) - 1
        breaker = breakers(name)
        if not breaker.allow():
            tried.append(f"{name} (circuit open)")
            if on_error is not None:
                on_error(name, "circuit_open")
            last_error = NotReady(
                f"the model {name!r} is failing and rests for a while (circuit breaker open)",
                code="model_unavailable",
                retry_after=max(1, int(breaker.retry_after_s() + 0.999)),
            )
            continue
        try:
            served, prompt, extra, stream = _start(name, get, build, timeouts, cancel, on_position)
        except BaseException as exc:
            if not isinstance(exc, _Failed):
                breaker.release()
                raise
            failed = exc
            if failed.kind is not None:
                breaker.failure()
                if on_error is not None:
                    on_error(name, failed.kind)
            else:
                breaker.release()
            log.warning("model fallback", extra={"model": name, "why": failed.why})
            if last or failed.error is None:
                raise failed.error if failed.error is not None else NotReady(failed.why) from None
            tried.append(f"{name} ({failed.why})")
            last_error = failed.error
            continue
        chosen = replace(decision, model=name, fallback_from=tuple(tried)) if tried else decision
        return Opened(
            served, prompt, extra, _guard(stream, breaker, timeouts.total_s, name, on_error), chosen
        )
    assert last_error is not None
    raise last_error


def _start(name, get, build, timeouts, cancel, on_position):
    try:
        served = get(name, cancel, on_position)
    except (ModelLoading, NoRoom) as exc:
        raise _Failed(exc.detail, None, exc) from None
    except NotFound:
        raise
    except NotReady as exc:
        if exc.extra.get("code") == "model_loading":  # the default, still loading at start-up
            raise _Failed(exc.detail, None, exc) from None
        raise _Failed(f"load failed: {exc.detail}", "load", exc) from None
    try:
        prompt, extra, params = build(served)
    except InvalidInput as exc:
        raise _Failed(f"cannot serve this request: {exc.detail}", None, exc) from None
    try:
        stream = served.stream(prompt, params, cancel, on_position)
    except (QueueFull, InvalidInput) as exc:
        raise _Failed(exc.detail, None, exc) from None
    except Cancelled:
        raise
    except Exception as exc:
        detail = exc.detail if isinstance(exc, ApplianceError) else f"{type(exc).__name__}: {exc}"
        raise _Failed(f"error before the first token: {detail}", "generation", exc) from None
    fired = threading.Event()  # the first-token deadline passed
    arrived = threading.Event()
    watcher = None
    if timeouts.first_token_s or cancel is not None:
        # Until the first token: its deadline, and the caller leaving, stop the generation at once
        # (a backend may only look at the caller's cancel between tokens).
        deadline = time.monotonic() + timeouts.first_token_s if timeouts.first_token_s else None

        def watch() -> None:
            while not arrived.wait(_WATCH_S):
                if cancel is not None and cancel.is_set():
                    stream.close()
                    return
                if deadline is not None and time.monotonic() >= deadline:
                    fired.set()
                    stream.close()
                    return

        watcher = threading.Thread(target=watch, name=f"first-token-{name}", daemon=True)
        watcher.start()
    try:
        first = next(stream)
    except StopIteration:
        first = TokenDelta("", "stop")
    except Exception as exc:
        stream.close()
        detail = exc.detail if isinstance(exc, ApplianceError) else f"{type(exc).__name__}: {exc}"
        raise _Failed(f"error before the first token: {detail}", "generation", exc) from None
    finally:
        arrived.set()
    if fired.is_set() and not (cancel is not None and cancel.is_set()):
        stream.close()
        error = NotReady(
            f"{name} gave no first token within {timeouts.first_token_s:g} s",
            code="model_timeout",
            retry_after=5,
        )
        raise _Failed(f"no first token within {timeouts.first_token_s:g} s", "first_token", error)
    return served, prompt, extra, _Prefixed(stream, first)


class _Prefixed(TokenStream):
    """A stream whose first delta was already read: it yields that one, then the rest."""

    def __init__(self, inner: TokenStream, first: TokenDelta) -> None:
        self._inner = inner

        def source(ts: TokenStream):
            if first.finish_reason is not None:
                ts.stats = inner.stats
                yield first
                return
            yield first
            for delta in inner:
                if delta.finish_reason is not None:
                    ts.stats = inner.stats
                yield delta

        super().__init__(source, inner.close)

    def close(self) -> None:
        self._inner.close()
        super().close()


def _guard(
    stream: TokenStream, breaker, total_s: float | None, name: str, on_error: OnError | None
) -> TokenStream:
    """The stream with the total timeout on it; its breaker hears how it ended."""
    expired = threading.Event()
    timer = None
    if total_s:

        def expire() -> None:
            expired.set()
            stream.close()

        timer = threading.Timer(total_s, expire)
        timer.daemon = True
        timer.start()

    told = threading.Event()  # the breaker heard how it ended

    def source(ts: TokenStream):
        try:
            for delta in stream:
                if delta.finish_reason is not None:
                    ts.stats = stream.stats
                    if expired.is_set():
                        told.set()
                        breaker.failure()
                        if on_error is not None:
                            on_error(name, "timeout")
                    elif delta.finish_reason != "cancelled":
                        told.set()
                        breaker.success()
                yield delta
        except Exception:
            told.set()
            breaker.failure()
            if on_error is not None:
                on_error(name, "generation")
            raise

    def release() -> None:
        if timer is not None:
            timer.cancel()
        stream.close()
        if not told.is_set():  # the caller left (or stopped reading): neither success nor failure
            breaker.release()

    return _Closing(stream, source, release)


class _Closing(TokenStream):
    """A TokenStream over another whose close() reaches the inner one at once, even mid-delta."""

    def __init__(self, inner: TokenStream, source, release) -> None:
        self._inner = inner
        super().__init__(source, release)

    def close(self) -> None:
        self._inner.close()
        super().close()
