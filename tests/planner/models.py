"""The packaged GGUF files' headers for planner tests, without assembling the 1.1 GB Qwen file: its first
part (header and tensor table) extended to full size as a sparse file."""

from __future__ import annotations

import shutil
from pathlib import Path

from appliance.models.manifest import QWEN_CODER, qwen_part_paths, smollm2_path
from appliance.planner.shape import ModelShape, read_shape


def smollm2() -> ModelShape:
    return read_shape(smollm2_path(), "SmolLM2-135M-Instruct")


def qwen_header_file(directory: Path) -> Path:
    path = directory / QWEN_CODER.file
    if not path.exists():
        shutil.copyfile(qwen_part_paths()[0], path)
        with open(path, "r+b") as f:
            f.truncate(QWEN_CODER.size)  # sparse: the tensor data reads as zeros, the header is real
    return path


def qwen(directory: Path) -> ModelShape:
    return read_shape(qwen_header_file(directory), QWEN_CODER.name)
