"""Settings: defaults, TOML file, APPLIANCE_* environment, validation with clear errors."""

from __future__ import annotations

import pytest

from appliance.config import load_settings
from appliance.errors import InvalidInput


def test_defaults():
    s = load_settings(environ={})
    assert s.server.port == 8080 and s.retrieval.fusion == "zscore" and s.index.vector_dtype == "i8"


def test_file_then_env_then_overrides(tmp_path):
    cfg = tmp_path / "a.toml"
    cfg.write_text('data_dir = "/srv/x"\n[server]\nport = 9000\n[retrieval]\nfusion = "rrf"\n')
    s = load_settings(cfg, environ={"APPLIANCE_SERVER__PORT": "9100"})
    assert (s.data_dir, s.server.port, s.retrieval.fusion) == ("/srv/x", 9100, "rrf")
    s = load_settings(cfg, overrides={"server": {"port": 9200}}, environ={"APPLIANCE_SERVER__PORT": "9100"})
    assert s.server.port == 9200


@pytest.mark.parametrize(
    ("environ", "needle"),
    [
        ({"APPLIANCE_SERVER__PORTT": "1"}, "portt"),
        ({"APPLIANCE_SERVER__PORT": "abc"}, "port"),
        ({"APPLIANCE_SERVER__PORT": "70000"}, "port"),
        ({"APPLIANCE_RETRIEVAL__FUSION": "magic"}, "fusion"),
        ({"APPLIANCE_CHUNKING__OVERLAP_TOKENS": "500"}, "overlap"),
        ({"APPLIANCE_RETRIEVAL__RERANKER": "cross-encoder"}, "reranker_model_dir"),
    ],
)
def test_bad_settings_are_refused_with_a_clear_message(environ, needle):
    with pytest.raises(InvalidInput, match=needle):
        load_settings(environ=environ)


def test_missing_and_broken_config_files(tmp_path):
    with pytest.raises(InvalidInput, match="not found"):
        load_settings(tmp_path / "nope.toml", environ={})
    bad = tmp_path / "bad.toml"
    bad.write_text("this is = = not toml")
    with pytest.raises(InvalidInput, match="not valid TOML"):
        load_settings(bad, environ={})


def test_sql_views_are_named_in_lower_case_and_read_from_toml(tmp_path):
    cfg = tmp_path / "a.toml"
    cfg.write_text('[workflows.sql_views]\nopen_docs = "SELECT id FROM documents"\n')
    assert load_settings(cfg, environ={}).workflows.sql_views == {"open_docs": "SELECT id FROM documents"}
    with pytest.raises(InvalidInput, match="workflows.sql_views: 'Open-Docs' must be a lower-case name"):
        load_settings(overrides={"workflows": {"sql_views": {"Open-Docs": "SELECT 1"}}}, environ={})


def test_exact_search_max_must_not_be_negative():
    assert load_settings(environ={}).index.exact_search_max == 50_000
    assert load_settings(overrides={"index": {"exact_search_max": 0}}, environ={}).index.exact_search_max == 0
    with pytest.raises(InvalidInput, match="index.exact_search_max must be >= 0"):
        load_settings(overrides={"index": {"exact_search_max": -1}}, environ={})
