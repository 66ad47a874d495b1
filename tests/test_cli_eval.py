"""The `appliance eval` command group's parser: every subcommand's help renders, a registrar
extends it, and gate thresholds are read from METRIC=VALUE."""

from __future__ import annotations

import argparse

import pytest

from appliance.cli import build_parser
from appliance.cli import eval as eval_cli
from appliance.errors import ApplianceError


@pytest.mark.parametrize(
    "command",
    [None, "sets", "import", "run", "runs", "show", "compare", "gates", "gate-create", "gate-check"],
)
def test_every_eval_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args(["eval", *([command] if command else []), "--help"])
    assert done.value.code == 0 and "--json" in capsys.readouterr().out


def test_a_registrar_adds_a_subcommand(monkeypatch):
    def add_explain(actions, parents):
        a = actions.add_parser("explain", parents=[parents.client], help="why did this item fail?")
        a.add_argument("--collection")
        a.set_defaults(func=lambda args: 0)

    monkeypatch.setattr(eval_cli, "SUBCOMMANDS", [*eval_cli.SUBCOMMANDS, add_explain])
    args = build_parser().parse_args(["eval", "explain", "--collection", "docs", "--json"])
    assert (args.eval_command, args.collection, args.json) == ("explain", "docs", True)


def test_gate_thresholds_from_the_command_line():
    args = build_parser().parse_args(
        [
            "eval",
            "gate-create",
            "g",
            "--set",
            "s",
            "--min",
            "ndcg@10=0.3",
            "--max-regression",
            "ndcg@10=0.02",
            "--max",
            "ttft_ms_p95=900",
        ]
    )
    assert eval_cli._thresholds(args) == [
        {"metric": "ndcg@10", "min": 0.3, "max_regression": 0.02},
        {"metric": "ttft_ms_p95", "max": 900.0},
    ]
    bad = argparse.Namespace(min=["ndcg@10"], max=[], min_delta=[], max_regression=[])
    with pytest.raises(ApplianceError, match="write METRIC=NUMBER"):
        eval_cli._thresholds(bad)
