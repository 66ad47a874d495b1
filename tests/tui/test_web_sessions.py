"""The web console's browser sessions on a clock the test turns: idle and maximum length, consoles
held open, sign-out, a refused key's sessions, and the bound on how many are kept."""

from __future__ import annotations

import pytest

from appliance.tui.web_sessions import WebSessions


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


def test_a_session_ends_when_idle_and_each_visit_restarts_the_wait(clock):
    sessions = WebSessions(idle_seconds=60, max_seconds=3600, clock=clock)
    token = sessions.open("key-a")
    clock.now += 59
    assert sessions.key(token) == "key-a"  # seen: the idle wait starts again
    clock.now += 59
    assert sessions.key(token) == "key-a"
    clock.now += 60
    assert sessions.key(token) is None and len(sessions) == 0
    assert sessions.remaining(token) == 0.0


def test_an_open_console_is_not_idle_but_the_maximum_length_still_ends_it(clock):
    sessions = WebSessions(idle_seconds=60, max_seconds=600, clock=clock)
    token = sessions.open("key-a")
    sessions.hold(token)
    clock.now += 300
    assert sessions.key(token) == "key-a" and sessions.remaining(token) == pytest.approx(300)
    sessions.release(token)
    clock.now += 61
    assert sessions.key(token) is None  # idle once its console closed
    held = sessions.open("key-b")
    sessions.hold(held)
    clock.now += 600
    assert sessions.key(held) is None


def test_sign_out_and_a_refused_key_end_sessions(clock):
    sessions = WebSessions(clock=clock)
    a1, a2, b = sessions.open("key-a"), sessions.open("key-a"), sessions.open("key-b")
    assert len({a1, a2, b}) == 3
    sessions.close(a1)
    assert sessions.key(a1) is None and sessions.key(a2) == "key-a"
    sessions.end_key("key-a")
    assert sessions.key(a2) is None and sessions.key(b) == "key-b"


def test_unknown_and_odd_tokens_stand_for_nothing(clock):
    sessions = WebSessions(clock=clock)
    sessions.open("key-a")
    for token in ("", "not-a-token", "caf\u00e9", "x" * 10_000):
        assert sessions.key(token) is None
        sessions.close(token)  # no error
    assert len(sessions) == 1


def test_the_least_recently_seen_session_goes_past_the_limit(clock):
    sessions = WebSessions(limit=2, clock=clock)
    first = sessions.open("key-a")
    clock.now += 1
    second = sessions.open("key-b")
    clock.now += 1
    assert sessions.key(first) == "key-a"  # seen after the second
    clock.now += 1
    third = sessions.open("key-c")
    assert (sessions.key(first), sessions.key(second), sessions.key(third)) == ("key-a", None, "key-c")


def test_lengths_must_be_positive():
    with pytest.raises(ValueError):
        WebSessions(idle_seconds=0)
    with pytest.raises(ValueError):
        WebSessions(limit=0)
