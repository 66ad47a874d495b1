"""The shipped Grafana dashboard and Prometheus alert rules (ops/) against a live server's /metrics.

Every PromQL expression is tokenized and each metric it selects must be a family the server
exposes, so renaming a metric breaks this test instead of a dashboard panel or an alert."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import REPO

DASHBOARD = REPO / "ops" / "grafana" / "appliance.json"
ALERTS = REPO / "ops" / "prometheus" / "alerts.yml"
ALERT_TESTS = REPO / "ops" / "prometheus" / "alerts_test.yml"

# PromQL's lexical classes (prometheus/promql/parser/lex.go), in match order. An identifier comes
# before numbers so `Info_x` is a name, and a duration before a number so `5m` is one token.
_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<comment>\#[^\n]*)
  | (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
  | (?P<variable>\$\{?\w+\}?)
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<duration>(?:\d+(?:ms|[smhdwy]))+(?![A-Za-z0-9_]))
  | (?P<number>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<op>==|!=|=~|!~|>=|<=|[-+*/%^<>=(){}\[\],@:])
    """,
    re.VERBOSE,
)
AGGREGATIONS = frozenset(
    "sum min max avg group stddev stdvar count count_values bottomk topk quantile limitk limit_ratio".split()
)
FUNCTIONS = frozenset(
    """abs absent absent_over_time acos acosh asin asinh atan atanh avg_over_time ceil changes clamp
    clamp_max clamp_min cos cosh count_over_time day_of_month day_of_week day_of_year days_in_month
    deg delta deriv double_exponential_smoothing exp floor histogram_avg histogram_count
    histogram_fraction histogram_quantile histogram_stddev histogram_stdvar histogram_sum
    holt_winters hour idelta increase irate label_join label_replace last_over_time ln log10 log2
    mad_over_time max_over_time min_over_time minute month pi predict_linear present_over_time
    quantile_over_time rad rate resets round scalar sgn sin sinh sort sort_by_label
    sort_by_label_desc sort_desc sqrt stddev_over_time stdvar_over_time sum_over_time tan tanh time
    timestamp vector year""".split()
)
# Followed by a parenthesised list of label names, not of expressions.
LABEL_LIST_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
OTHER_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"})


def tokenize(expr: str) -> list[tuple[str, str]]:
    tokens, pos = [], 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if m is None:
            raise ValueError(f"cannot read PromQL at {expr[pos : pos + 20]!r} in {expr!r}")
        if m.lastgroup not in ("ws", "comment"):
            tokens.append((m.lastgroup, m.group()))
        pos = m.end()
    return tokens


def selectors(expr: str) -> list[tuple[str, set[str]]]:
    """The vector selectors of an expression: each metric name with the labels its matchers name.

    A metric name is an identifier outside label matchers `{}`, range and subquery brackets `[]`
    and label lists (`by (...)`, `on (...)`) that is no function, aggregation or keyword. An
    unknown function is an error (a typo would otherwise pass)."""
    tokens = tokenize(expr)
    found: list[tuple[str, set[str]]] = []
    depth = {"{": 0, "[": 0}
    i = 0
    while i < len(tokens):
        kind, text = tokens[i]
        nxt = tokens[i + 1][1] if i + 1 < len(tokens) else None
        if text in "{[" and kind == "op":
            depth[text] += 1
        elif text in "}]" and kind == "op":
            depth["{" if text == "}" else "["] -= 1
        elif kind == "ident" and depth["{"] and nxt in ("=", "!=", "=~", "!~") and found:
            found[-1][1].add(text)  # a matcher of the selector just opened
        elif kind == "ident" and not depth["{"] and not depth["["]:
            low = text.lower()
            if low in LABEL_LIST_KEYWORDS:
                if nxt == "(":
                    i = tokens.index(("op", ")"), i)  # label names only, up to the closing paren
            elif low in OTHER_KEYWORDS:
                pass
            elif text in AGGREGATIONS and nxt in ("(", "by", "without"):
                pass
            elif nxt == "(":
                if text not in FUNCTIONS:
                    raise ValueError(f"unknown PromQL function {text!r} in {expr!r}")
            else:
                found.append((text, set()))
        i += 1
    return found


def selected_metrics(expr: str) -> set[str]:
    return {name for name, _ in selectors(expr)}


def exposed_series_names(exposition: str) -> dict[str, set[str] | None]:
    """Every name a selector may use for the exposed families (a gauge's own name, a counter's
    `_total`, a histogram's `_bucket`, `_sum` and `_count`), with the labels its samples carry;
    None for a family with no sample yet (its labels are unknown, its name exposed all the same)."""
    names: dict[str, set[str] | None] = {}
    for family in text_string_to_metric_families(exposition):
        labels = {label for sample in family.samples for label in sample.labels} or None
        if family.type == "counter":
            series = [f"{family.name}_total", f"{family.name}_created"]
        elif family.type in ("histogram", "summary"):
            series = [f"{family.name}_{s}" for s in ("bucket", "sum", "count", "created")]
        else:
            series = [family.name]
        names.update(dict.fromkeys(series, labels))
    return names


def dashboard_expressions() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    out = []

    def walk(panels):
        for panel in panels:
            for target in panel.get("targets", []):
                out.append((panel["title"], target["expr"]))
            walk(panel.get("panels", []))

    walk(dashboard["panels"])
    return out


def alert_expressions() -> list[tuple[str, str]]:
    rules = yaml.safe_load(ALERTS.read_text())
    return [(rule["alert"], rule["expr"]) for group in rules["groups"] for rule in group["rules"]]


# -- the tokenizer itself ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        (
            'histogram_quantile(0.95, sum by (le, stage) (rate(rag_query_latency_seconds_bucket{stage="total"}[5m])))',
            {"rag_query_latency_seconds_bucket"},
        ),
        ("1 - a_free / on (instance) group_left (job) b_total > 0.8", {"a_free", "b_total"}),
        ('max by (source) (lag{source=~"git:.*"}) > 2 * 3600', {"lag"}),
        ("sum(increase(x_total[$__range])) + count without (le) (y offset 5m)", {"x_total", "y"}),
        ("rate(x[$__rate_interval]) and bool y:recorded", {"x", "y:recorded"}),
        ('Info_metric{name="sum(by)"} unless inf', {"Info_metric"}),
    ],
)
def test_the_tokenizer_finds_exactly_the_selected_metrics(expr, expected):
    assert selected_metrics(expr) == expected


def test_the_tokenizer_finds_the_labels_each_selector_matches():
    expr = 'sum by (le) (rate(a_bucket{stage="total", le!~"1|2"}[5m])) / on (x) b{job=~"j.*"} + c'
    assert selectors(expr) == [("a_bucket", {"stage", "le"}), ("b", {"job"}), ("c", set())]


def test_the_tokenizer_refuses_an_unknown_function():
    with pytest.raises(ValueError, match="histogram_quantil"):
        selected_metrics("histogram_quantil(0.9, x_bucket)")


def test_the_ops_files_are_well_formed():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert len(dashboard_expressions()) >= 30
    alerts = {name for name, _ in alert_expressions()}
    # The alerts the mission names, by what they watch.
    for needed in (
        "ApplianceIngestionLagging",
        "ApplianceAnswerSlow",
        "ApplianceDiskFilling",
        "ApplianceChatModelDown",
        "ApplianceQueueSaturated",
        "ApplianceDriftDetected",
        "ApplianceOutboundAttempt",
    ):
        assert needed in alerts


# -- against a live server ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def exposed(isolation_world) -> dict[str, set[str] | None]:
    with isolation_world.srv.client() as admin:
        scrape = admin.get("/metrics")
    assert scrape.status_code == 200, scrape.text
    return exposed_series_names(scrape.text)


def test_a_renamed_metric_would_be_caught(exposed):
    assert "rag_ingestion_lag_seconds" in exposed
    assert "llm_tokens_per_second_bucket" in exposed and "llm_tokens_per_second" not in exposed
    assert selected_metrics("max(rag_ingestion_lag_secs)") - exposed.keys() == {"rag_ingestion_lag_secs"}
    # A renamed label too, where the scrape has samples to show the family's labels.
    assert exposed["rag_query_latency_seconds_bucket"] == {"stage", "le"}


@pytest.mark.parametrize(
    ("where", "exprs"), [("dashboard", dashboard_expressions), ("alerts", alert_expressions)]
)
def test_every_metric_and_label_the_ops_files_use_is_exposed(exposed, where, exprs):
    missing, unknown_labels = set(), set()
    for title, expr in exprs():
        for name, labels in selectors(expr):
            if name not in exposed:
                missing.add(f"{title}: {name}")
            elif exposed[name] is not None and labels - exposed[name]:
                unknown_labels.add(f"{title}: {name} {sorted(labels - exposed[name])}")
    assert not missing, f"{where} uses metrics /metrics does not expose: {sorted(missing)}"
    assert not unknown_labels, f"{where} matches labels the metrics do not have: {sorted(unknown_labels)}"


def test_promtool_accepts_the_rules_and_their_unit_tests():
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    for args in (["check", "rules", str(ALERTS)], ["test", "rules", str(ALERT_TESTS)]):
        done = subprocess.run([promtool, *args], capture_output=True, text=True, cwd=ALERTS.parent)
        assert done.returncode == 0, done.stdout + done.stderr
