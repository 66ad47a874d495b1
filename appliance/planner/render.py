"""Serving configurations for a GPU cluster: vLLM engine arguments and a KServe InferenceService manifest."""

from __future__ import annotations

import yaml

from appliance.planner.serving import GPU_MEMORY_SHARE

KSERVE_TEMPLATE = """\
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: {name}
  annotations:
    appliance.plan/config-id: "{config_id}"
spec:
  predictor:
    model:
      modelFormat:
        name: vLLM
      runtime: vllm-runtime
      storageUri: "{storage_uri}"
      args: {args}
      resources:
        limits:
          nvidia.com/gpu: "1"
        requests:
          nvidia.com/gpu: "1"
    nodeSelector:
      nvidia.com/gpu.product: "{gpu}"
"""


def vllm_args(model_dir: str, served_name: str, context: int, max_num_seqs: int) -> list[str]:
    return [
        f"--model={model_dir}",
        f"--served-model-name={served_name}",
        f"--max-model-len={context}",
        f"--max-num-seqs={max_num_seqs}",
        f"--gpu-memory-utilization={GPU_MEMORY_SHARE}",
        "--enable-prefix-caching",
    ]


def _k8s_name(text: str) -> str:
    name = "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")
    while "--" in name:
        name = name.replace("--", "-")
    return name[:63].strip("-") or "model"


def kserve_manifest(config_id: str, model: str, gpu: str, context: int, max_num_seqs: int) -> str:
    """The InferenceService YAML, rendered from the template and checked by parsing it back."""
    storage = f"pvc://models/{_k8s_name(model)}"
    args = vllm_args("/mnt/models", model, context, max_num_seqs)
    text = KSERVE_TEMPLATE.format(
        name=_k8s_name(model),
        config_id=config_id,
        storage_uri=storage,
        args=yaml.safe_dump(args, default_flow_style=True, width=10_000).strip(),
        gpu=gpu.split("-")[0],
    )
    parsed = yaml.safe_load(text)
    if parsed["spec"]["predictor"]["model"]["args"] != args:
        raise ValueError("the rendered InferenceService does not carry the engine arguments")
    return text
