"""`appliance doctor`'s index check on a running server's status: catching up and an eventually
consistent engine's late count are information, a disagreement is a failure."""

from __future__ import annotations

from appliance.ops.doctor import FAIL, INFO, OK, _indexes_running


def status(chunks: int, **indexes: tuple[int, int, int, bool]) -> dict:
    """indexes: name -> (count, applied seq, outbox seq, count may lag)."""
    return {
        "chunks": chunks,
        "indexes": {
            name: {"count": c, "applied_seq": a, "outbox_seq": o, "count_may_lag": lag}
            for name, (c, a, o, lag) in indexes.items()
        },
    }


def test_agreeing_indexes_are_ok():
    check = _indexes_running(status(10, bm25=(10, 5, 5, False), vectors=(10, 5, 5, False)))
    assert check.status == OK and check.detail == "DuckDB 10 chunks; bm25 10, vectors 10"


def test_indexes_behind_the_outbox_are_catching_up():
    check = _indexes_running(status(10, bm25=(8, 4, 5, False), vectors=(10, 5, 5, False)))
    assert check.status == INFO and "catching up with the outbox" in check.detail


def test_a_late_count_of_an_eventually_consistent_engine_is_not_damage():
    check = _indexes_running(status(10, bm25=(10, 5, 5, False), vectors=(9, 5, 5, True)))
    assert check.status == INFO and "the vectors engine counts acknowledged writes late" in check.detail
    # More than the catalogue holds is damage whatever the engine.
    assert _indexes_running(status(10, bm25=(10, 5, 5, False), vectors=(11, 5, 5, True))).status == FAIL


def test_a_disagreeing_index_fails_even_while_another_catches_up():
    check = _indexes_running(status(10, bm25=(7, 5, 5, False), vectors=(9, 4, 5, False)))
    assert check.status == FAIL and "they disagree" in check.detail
