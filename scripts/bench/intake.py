"""Model intake: how long registering a GGUF file takes, step by step, for Gemma 3 270M and SmolLM2.

Each model is registered into a fresh registry (real DuckDB in a temp dir): the header read and
checked, the sha256, and the probe in a child process (load, a short generation, the chat template,
JSON output). Prints seconds per step, the probe's tokens/s and resident memory, and the state and
tags the registry recorded. `gguf.GGUFReader` is timed on the same file for comparison (the header
reader of appliance/models/gguf_header.py exists because of it).

    python scripts/bench/intake.py [--runs 1] [--skip-reader]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from appliance.db.connection import Database  # noqa: E402
from appliance.db.migrations import migrate  # noqa: E402
from appliance.db.registry import RegistryStore  # noqa: E402
from appliance.files import sha256_file  # noqa: E402
from appliance.models.builtin_models import assemble_gemma3_270m  # noqa: E402
from appliance.models.gguf_header import read_header  # noqa: E402
from appliance.models.manifest import smollm2_path  # noqa: E402
from appliance.models.probe import ProbeLimits  # noqa: E402
from appliance.models.registry import IntakeLimits, ModelRegistry  # noqa: E402


def _timed(work) -> tuple[object, float]:
    start = time.perf_counter()
    result = work()
    return result, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--skip-reader", action="store_true", help="do not time gguf.GGUFReader")
    args = parser.parse_args()
    limits = IntakeLimits(max_bytes=4 * 1024**3, probe=ProbeLimits(memory_bytes=4 * 1024**3, timeout_s=600))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        gemma, assemble_s = _timed(lambda: assemble_gemma3_270m(root / "models"))
        print(f"Gemma 3 270M assembled from its 4 parts in {assemble_s:.2f} s")
        for label, path in (("Gemma 3 270M Q4_K_M", gemma), ("SmolLM2-135M Q4_1", smollm2_path())):
            header_s, sha_s, total_s, probe_s = [], [], [], []
            for run in range(args.runs):
                header_s.append(_timed(lambda p=path: read_header(p))[1])
                sha_s.append(_timed(lambda p=path: sha256_file(p))[1])
                db = Database(root / f"{label.split()[0]}-{run}.duckdb")
                migrate(db)
                registry = ModelRegistry(RegistryStore(db), root / "models", limits)
                version, seconds = _timed(lambda p=path, r=registry: r.register_file(p))
                total_s.append(seconds)
                probe_s.append(version.probe.get("probe_s", 0.0) if version.probe else 0.0)
                db.close()
            probe = version.probe or {}
            print(f"\n{label}: {path.stat().st_size / 1e6:.1f} MB")
            print(f"  header read and checked  {statistics.median(header_s):7.3f} s")
            print(f"  sha256                   {statistics.median(sha_s):7.3f} s")
            print(f"  probe (child process)    {statistics.median(probe_s):7.3f} s")
            print(f"  import total             {statistics.median(total_s):7.3f} s  (median of {args.runs})")
            print(
                f"  probe: load {probe.get('load_s')} s, {probe.get('tokens_per_s')} tokens/s, "
                f"resident {probe.get('resident_bytes', 0) / 1e6:.0f} MB (peak {probe.get('peak_resident_bytes', 0) / 1e6:.0f} MB)"
            )
            print(f"  state {version.state}, tags {' '.join(version.tags)}")
            if not args.skip_reader:
                import gguf

                _, reader_s = _timed(lambda p=path: gguf.GGUFReader(p))
                print(f"  gguf.GGUFReader on the same file: {reader_s:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
