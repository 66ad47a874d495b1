#!/usr/bin/env bash
# Build llama-cpp-python once as a portable wheel and cache it; later installs reuse the cache.
#
# llama-cpp-python has no wheel on the registry, so pip compiles llama.cpp (~5 min on 2 cores).
# GGML_NATIVE=OFF keeps the wheel free of -march=native so it runs on any x86-64 server with AVX2.
# Usage: scripts/build-llama-wheel.sh [PIP]   (PIP defaults to .venv/bin/pip, else pip)
# Prints the path of the cached wheel on its last line of stdout.
set -euo pipefail

VERSION="0.3.36"
CACHE="${APPLIANCE_WHEEL_CACHE:-$HOME/.cache/appliance-wheels}"
PIP="${1:-}"
if [[ -z "$PIP" ]]; then
    if [[ -x .venv/bin/pip ]]; then PIP=".venv/bin/pip"; else PIP="pip"; fi
fi

find_wheel() {
    # Wheel names use underscores for the distribution name (PEP 427).
    compgen -G "$CACHE/llama_cpp_python-${VERSION}-*.whl" | head -n 1 || true
}

mkdir -p "$CACHE"
wheel="$(find_wheel)"
if [[ -n "$wheel" ]]; then
    echo "llama-cpp-python ${VERSION}: cached wheel found" >&2
    echo "$wheel"
    exit 0
fi

echo "llama-cpp-python ${VERSION}: building from source (several minutes)..." >&2
# Build into a temporary folder first so an interrupted build never leaves a half-written
# wheel in the cache that the next run would mistake for a good one.
tmp="$(mktemp -d "$CACHE/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
CMAKE_ARGS="${CMAKE_ARGS:-} -DGGML_NATIVE=OFF" FORCE_CMAKE=1 \
    "$PIP" wheel --no-deps --no-cache-dir "llama-cpp-python==${VERSION}" -w "$tmp" >&2
built="$(compgen -G "$tmp/llama_cpp_python-${VERSION}-*.whl" | head -n 1 || true)"
if [[ -z "$built" ]]; then
    echo "error: pip wheel finished but produced no llama_cpp_python-${VERSION} wheel in $tmp" >&2
    exit 1
fi
mv "$built" "$CACHE/"
wheel="$CACHE/$(basename "$built")"
echo "llama-cpp-python ${VERSION}: wheel cached at $wheel" >&2
echo "$wheel"
