"""TokenStream's promise to every caller: whatever thread closes it and whenever, what the request
holds (its model instance, its slot) is released, without anyone reading again."""

from __future__ import annotations

import threading

from appliance.models.runtime import TokenDelta, TokenStream


def _stepped_source(producing: threading.Event, go_on: threading.Event):
    """A backend that, like llama.cpp between its stop check and its yield, does not look at
    `stopped()` while a token is being produced."""

    def source(ts: TokenStream):
        while True:
            producing.set()
            go_on.wait(10)
            go_on.clear()
            yield TokenDelta("x")

    return source


def test_closed_while_a_delta_is_produced_it_is_released_without_another_read():
    # The API's relay closes a stream from the event loop when its client leaves, while a worker
    # thread is inside next(); that thread hands back its delta and nobody reads again.
    producing, go_on, released = threading.Event(), threading.Event(), threading.Event()
    stream = TokenStream(_stepped_source(producing, go_on), released.set)
    reader = threading.Thread(target=lambda: next(stream), daemon=True)
    reader.start()
    assert producing.wait(10)
    stream.close()  # the reader holds the stream: this can only flag it
    assert not released.is_set()
    go_on.set()  # the token comes out; the reader returns it and reads no more
    reader.join(10)
    assert released.wait(10), "the stream kept what it holds (a model slot) after it was closed"
    assert next(stream, None) is None  # and it is over


def test_closed_between_deltas_it_is_released_at_once():
    producing, go_on, released = threading.Event(), threading.Event(), threading.Event()
    go_on.set()
    stream = TokenStream(_stepped_source(producing, go_on), released.set)
    assert next(stream).text == "x"
    stream.close()
    assert released.is_set()
    assert next(stream, None) is None


def test_a_stream_read_to_its_end_releases_once():
    calls: list[int] = []

    def source(ts: TokenStream):
        yield TokenDelta("a")
        ts.release()
        yield TokenDelta("", "stop")

    released = threading.Lock()

    def release() -> None:
        if released.acquire(blocking=False):
            calls.append(1)

    stream = TokenStream(source, release)
    assert [d.text for d in stream] == ["a", ""]
    stream.close()
    assert calls == [1]
