"""The sweep's size, its ranking (stable, by priority), the serving model's memory, and the rendered YAML."""

from __future__ import annotations

import msgspec
import pytest
import yaml

from appliance.plan_records import Calibration, DeploymentIntent, SlotPoint
from appliance.planner.hardware import GPU_CATALOGUE
from appliance.planner.predict import workload
from appliance.planner.render import kserve_manifest, vllm_args
from appliance.planner.serving import ServingConfig, cpu_costs, gpu_costs
from appliance.planner.sweep import sweep
from tests.planner.models import qwen, smollm2


def calibration() -> Calibration:
    """Figures of the order a 2-core box measures (a recorded calibration, not this run's)."""
    ref = smollm2()
    points = [
        SlotPoint(
            slots=1,
            active=1,
            samples=3,
            prefill_tokens_per_s=250,
            prefill_fixed_s=0.05,
            decode_tokens_per_s=90,
            ttft_s=1.0,
            decode_cv=0.05,
            ttft_cv=0.05,
        ),
        SlotPoint(
            slots=2,
            active=1,
            samples=3,
            prefill_tokens_per_s=180,
            prefill_fixed_s=0.05,
            decode_tokens_per_s=70,
            ttft_s=1.4,
            decode_cv=0.05,
            ttft_cv=0.05,
        ),
        SlotPoint(
            slots=2,
            active=2,
            samples=6,
            prefill_tokens_per_s=120,
            prefill_fixed_s=0.05,
            decode_tokens_per_s=45,
            ttft_s=2.1,
            decode_cv=0.05,
            ttft_cv=0.05,
        ),
    ]
    return Calibration(
        id="c1",
        created_at="2026-01-01T00:00:00+00:00",
        fingerprint="f",
        quick=False,
        hardware={"cpu_model": "x", "cores": 2, "memory_bytes": 16 * 2**30},
        model="SmolLM2-135M-Instruct",
        model_shape=ref.to_dict(),
        threads=1,
        batch_threads=2,
        context_length=2048,
        prompt_tokens=256,
        output_tokens=48,
        memory_bandwidth=8e9,
        matmul_flops=50e9,
        points=points,
        resident_base_bytes=10**8,
        resident_weights_bytes=2 * 10**7,
        resident_per_slot_bytes=ref.file_bytes + 2048 * ref.kv_bytes_per_token() + 5 * 10**7,
        overheads_ms={"embed_query": 12.0, "retrieval": 8.0},
        residual_cv=0.08,
        seconds=100.0,
    )


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return {
        "SmolLM2-135M-Instruct": smollm2(),
        "Qwen2.5-Coder-1.5B-Instruct": qwen(tmp_path_factory.mktemp("q")),
    }


def run(shapes, **intent):
    cal = calibration()
    ref = smollm2()
    gpus = {g.name: g for g in GPU_CATALOGUE}

    def costs_for(config):
        shape = shapes[config.model]
        return (
            cpu_costs(cal, ref, shape, config)
            if config.target == "cpu"
            else gpu_costs(gpus[config.target], shape, config)
        )

    want = DeploymentIntent(**intent)
    return sweep(want, workload(want, cal.overheads_ms), shapes, costs_for, cores=2)


def test_sweep_covers_200_configurations_and_is_stable(shapes):
    first = run(shapes, task="chat", users=4, p95_ttft_ms=2000, priority="latency")
    again = run(shapes, task="chat", users=4, p95_ttft_ms=2000, priority="latency")
    assert len(first) >= 200
    assert [r["id"] for r in first] == [r["id"] for r in again]
    feasible = [r for r in first if r["feasible"]]
    assert feasible and all(r["feasible"] for r in first[: len(feasible)])  # feasible first
    assert [r["e2e_p95_ms"] for r in feasible] == sorted(r["e2e_p95_ms"] for r in feasible)
    assert all(r["binding_constraint"] for r in first)
    assert all(not r["calibrated"] and r["extrapolated"] for r in first if r["target"] != "cpu")


def test_priority_changes_the_order(shapes):
    cheap = [r for r in run(shapes, task="chat", users=2, priority="cost") if r["feasible"]]
    assert [r["cost_usd_month"] for r in cheap] == sorted(r["cost_usd_month"] for r in cheap)
    assert cheap[0]["target"] == "cpu"  # this box costs less than any GPU
    best = [r for r in run(shapes, task="chat", users=2, priority="accuracy") if r["feasible"]]
    assert best[0]["model"] == "Qwen2.5-Coder-1.5B-Instruct"  # the larger model first


def test_constraints_name_what_fails(shapes):
    rows = run(shapes, task="rag", users=50, p95_ttft_ms=100, budget_usd_month=50)
    cpu = next(r for r in rows if r["target"] == "cpu")
    assert not cpu["feasible"] and "p95 TTFT" in cpu["reason"] and "budget" in cpu["reason"]


def test_memory_grows_with_slots_and_context_by_the_kv_formula(shapes):
    cal, ref, q = calibration(), smollm2(), shapes["Qwen2.5-Coder-1.5B-Instruct"]
    one = cpu_costs(cal, ref, q, ServingConfig("q", slots=1, context=2048))
    more_ctx = cpu_costs(cal, ref, q, ServingConfig("q", slots=1, context=4096))
    assert more_ctx.memory_bytes - one.memory_bytes == 2048 * q.kv_bytes_per_token()
    assert one.extrapolated  # 10x the calibrated model's size


def test_kserve_yaml_parses_and_carries_the_settings():
    text = kserve_manifest("Qwen@H100-s64-c8192", "Qwen2.5-Coder-1.5B-Instruct", "H100-80GB-SXM", 8192, 64)
    doc = yaml.safe_load(text)
    assert doc["kind"] == "InferenceService" and doc["apiVersion"] == "serving.kserve.io/v1beta1"
    args = doc["spec"]["predictor"]["model"]["args"]
    assert "--max-model-len=8192" in args and "--max-num-seqs=64" in args
    assert args == vllm_args("/mnt/models", "Qwen2.5-Coder-1.5B-Instruct", 8192, 64)
    assert doc["metadata"]["name"] == "qwen2-5-coder-1-5b-instruct"
    assert doc["metadata"]["annotations"]["appliance.plan/config-id"] == "Qwen@H100-s64-c8192"
    assert msgspec.json.decode(msgspec.json.encode(doc))  # plain data all the way down


def test_a_model_far_from_the_calibrated_one_gets_a_wider_interval(shapes):
    cal, ref = calibration(), smollm2()
    same = cpu_costs(cal, ref, ref, ServingConfig("s", slots=1, context=2048))
    far = cpu_costs(
        cal, ref, shapes["Qwen2.5-Coder-1.5B-Instruct"], ServingConfig("q", slots=1, context=2048)
    )
    assert same.rel_error == pytest.approx(cal.residual_cv) and not same.extrapolated
    assert far.rel_error > 2 * same.rel_error
    # The larger model is slower per token, and decode of it is more bandwidth-bound.
    assert far.token_s(1) > same.token_s(1) and far.bandwidth_share >= same.bandwidth_share


def test_a_slot_per_user_is_not_called_queueing(shapes):
    rows = {r["id"]: r for r in run(shapes, task="chat", users=4)}
    assert not rows["SmolLM2-135M-Instruct@cpu-s4-c2048-t1"]["binding_constraint"].startswith("queueing")
    assert rows["SmolLM2-135M-Instruct@cpu-s1-c2048-t1"]["binding_constraint"].startswith(
        "queueing at utilisation"
    )


def test_a_noisy_fixed_part_never_swallows_the_prefill():
    from appliance.models.runtime import Completion
    from appliance.planner.calibrate import _point

    # Measured on a saturated box: the fitted fixed part came out longer than this request's whole TTFT.
    done = [Completion("x", "length", 100, 10, time_to_first_token_s=0.8, total_s=2.0)]
    point = _point(2, 1, done, fixed_s=1.5)
    assert point.prefill_tokens_per_s == pytest.approx(100 / 0.4)
