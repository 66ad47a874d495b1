"""The readings /metrics takes at scrape time: process memory, the data disk, the chat model's
state and the catalogue's size per collection."""

from __future__ import annotations

import shutil

from prometheus_client.parser import text_string_to_metric_families

from appliance.observability import metrics as metrics_module
from appliance.observability.metrics import CHAT_MODEL_STATES, Metrics, watch_process


def scrape(metrics: Metrics) -> dict[str, float]:
    """Each sample as `name{label=value,...}` (labels sorted) -> value."""
    text = metrics.render()[0].decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def test_memory_disk_model_state_and_catalogue_are_read_at_scrape_time(tmp_path, monkeypatch):
    state = {"now": "loading"}
    catalogue = [("docs", 3, 40)]
    metrics = Metrics()
    watch_process(metrics, tmp_path, lambda: state["now"], lambda: catalogue)
    first = scrape(metrics)
    assert first["process_resident_memory_bytes"] > 0
    usage = shutil.disk_usage(tmp_path)
    assert first["appliance_data_disk_total_bytes"] == usage.total
    assert 0 < first["appliance_data_disk_free_bytes"] <= usage.total
    assert [first[f"appliance_chat_model_state{{state={s}}}"] for s in CHAT_MODEL_STATES] == [0, 1, 0, 0]
    assert first["appliance_collection_documents{collection=docs}"] == 3
    assert first["appliance_collection_chunks{collection=docs}"] == 40
    state["now"] = "loaded"
    catalogue.append(("wiki", 1, 2))
    second = scrape(metrics)
    assert second["appliance_chat_model_state{state=loaded}"] == 1
    assert second["appliance_chat_model_state{state=loading}"] == 0
    # The catalogue is counted once a while, not at every read of the registry.
    assert "appliance_collection_chunks{collection=wiki}" not in second
    monkeypatch.setattr(metrics_module, "CATALOGUE_READ_EVERY_S", 0.0)
    assert scrape(metrics)["appliance_collection_chunks{collection=wiki}"] == 2


def test_a_broken_reading_does_not_fail_the_scrape(tmp_path):
    def broken():
        raise RuntimeError("no model service, no catalogue")

    metrics = Metrics()
    watch_process(metrics, tmp_path / "gone", broken, broken)
    readings = scrape(metrics)
    assert not any(name.startswith(("appliance_data_disk", "appliance_collection")) for name in readings)
    assert readings["appliance_chat_model_state{state=failed}"] == 1
    assert readings["process_resident_memory_bytes"] > 0  # the rest of the registry still renders
