"""A few seeded chaos rounds (scripts/bench/chaos.py runs fifty, over more workloads): kill -9 during a
git sync and during batch ingest with frequent vector-index saves; after the restart no
acknowledged document is lost and DuckDB, Tantivy and USearch agree. (Kills during plain batch
ingest are tests/test_recovery.py's; drop-folder bursts are the bench's, to keep the suite short.)"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "scripts" / "bench" / "chaos.py"


def _chaos():
    spec = importlib.util.spec_from_file_location("chaos_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("workload", ["git", "saves"])
def test_kill_9_loses_no_acknowledged_document_and_the_stores_agree(workload):
    tally = _chaos().run_workload(workload, rounds=1, seed=21, batch=10, settle=120, max_delay=2.0)
    assert tally.kills == 1 and tally.restarts == 1
    assert tally.acknowledged > 0  # the kill landed after work was acknowledged, not before any
    assert tally.unsettled == 0, tally.notes  # a verdict was reached every round
    assert tally.lost == 0, tally.notes
    assert tally.disagreements == 0
