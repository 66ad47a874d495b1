"""`appliance tune embedder`: its arguments, the budget's duration syntax."""

from __future__ import annotations

import argparse

import pytest

from appliance.cli import build_parser
from appliance.cli.tune import parse_duration


@pytest.mark.parametrize(("text", "seconds"), [("30m", 1800), ("1h30m", 5400), ("900", 900), ("45s", 45)])
def test_budget_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "m", "30x", "1.5h", "-3m"])
def test_bad_durations_are_refused(text):
    with pytest.raises(argparse.ArgumentTypeError):
        parse_duration(text)


def test_tune_embedder_takes_the_collection_budget_wait_and_json():
    args = build_parser().parse_args(
        ["tune", "embedder", "--collection", "docs", "--budget", "10m", "--wait", "--json"]
    )
    assert (args.collection, args.budget, args.wait, args.json, args.threads) == (
        "docs",
        600.0,
        True,
        True,
        1,
    )
