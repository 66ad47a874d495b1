"""The readings /metrics takes at scrape time: process memory, the data disk, the chat model's state."""

from __future__ import annotations

import shutil

from prometheus_client.parser import text_string_to_metric_families

from appliance.observability.metrics import CHAT_MODEL_STATES, Metrics, watch_process


def scrape(metrics: Metrics) -> dict[str, dict]:
    text = metrics.render()[0].decode()
    return {
        s.name + (f"{{{s.labels['state']}}}" if "state" in s.labels else ""): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_memory_disk_and_model_state_are_read_at_each_scrape(tmp_path):
    state = {"now": "loading"}
    metrics = Metrics()
    watch_process(metrics, tmp_path, lambda: state["now"])
    first = scrape(metrics)
    assert first["process_resident_memory_bytes"] > 0
    usage = shutil.disk_usage(tmp_path)
    assert first["appliance_data_disk_total_bytes"] == usage.total
    assert 0 < first["appliance_data_disk_free_bytes"] <= usage.total
    assert [first[f"appliance_chat_model_state{{{s}}}"] for s in CHAT_MODEL_STATES] == [0, 1, 0, 0]
    state["now"] = "loaded"
    assert scrape(metrics)["appliance_chat_model_state{loaded}"] == 1


def test_a_broken_reading_does_not_fail_the_scrape(tmp_path):
    def broken() -> str:
        raise RuntimeError("no model service")

    metrics = Metrics()
    watch_process(metrics, tmp_path / "gone", broken)
    readings = scrape(metrics)
    assert "appliance_data_disk_total_bytes" not in readings
    assert readings["appliance_chat_model_state{failed}"] == 1
    assert metrics.render()[0].count(b"# TYPE") > 10  # the rest of the registry still renders
