#!/usr/bin/env bash
# Installs everything the local run and the tests need, idempotently:
#   Debian packages (Mosquitto, PostgreSQL 15 and its server headers, build tools,
#   Chromium for the dashboard test), TimescaleDB built from Debian 13's source package
#   against PostgreSQL 15, and a virtual environment with the project.
# Each step checks first whether its result is already there, so a second run is quick.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
state="$here/.local"
mkdir -p "$state"

sudo_() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
log() { printf '[bootstrap] %s\n' "$*" >&2; }

PG_MAJOR=15
PG_BIN=/usr/lib/postgresql/$PG_MAJOR/bin
DEB_PACKAGES=(mosquitto mosquitto-clients nats-server "postgresql-$PG_MAJOR" "postgresql-server-dev-$PG_MAJOR"
  build-essential cmake dpkg-dev libkrb5-dev libssl-dev python3-venv chromium openssl
  fonts-dejavu-core)

# npm vendors Leaflet for the dashboard; Debian's own npm when none is installed.
command -v npm >/dev/null 2>&1 || DEB_PACKAGES+=(npm)
missing=()
for p in "${DEB_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  sudo_ apt-get update -qq
  sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The Debian packages start system-wide services; the project runs its own instances
# on its own ports, so the packaged ones are left alone (stopped if they ever started).
for svc in mosquitto postgresql; do
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
    sudo_ systemctl stop "$svc" || true
  fi
done
# Only the packaged broker (its own config), never a broker this project started.
sudo_ pkill -f '^/usr/sbin/mosquitto -c /etc/mosquitto/mosquitto.conf' 2>/dev/null || true

# TimescaleDB: not in Debian 12's archive. Debian 13 carries it as a source package
# (the Apache-licensed edition), which builds against PostgreSQL 15. It is fetched through a
# private source list so that the system's own sources stay untouched.
ext_dir=$("$PG_BIN/pg_config" --sharedir)/extension
if ! ls "$ext_dir"/timescaledb--*.sql >/dev/null 2>&1; then
  log "building TimescaleDB from Debian 13's source package"
  apt_dir="$state/apt"
  mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial" "$apt_dir/src"
  # Reuse the mirror the system already uses for Debian, with the next release's suite.
  mirror=$(cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
    | grep -E '^(URIs:|deb )' | grep -oE 'https?://[^ ]+/debian/?' | grep -v security | head -n1 || true)
  [ -n "$mirror" ] || { log "no Debian mirror found in the system's apt sources"; exit 1; }
  mirror=${mirror%/}
  printf 'deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] %s trixie main\n' "$mirror" >"$apt_dir/sources.list"
  apt_opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
    -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache::Archives=$apt_dir/archives"
    -o "APT::Sandbox::User=root")
  apt-get "${apt_opts[@]}" update -qq
  rm -rf "$apt_dir/src"/*
  (cd "$apt_dir/src" && apt-get "${apt_opts[@]}" source -qq --download-only timescaledb \
    && dpkg-source -x --no-check ./*.dsc ts >/dev/null)
  (cd "$apt_dir/src/ts" && ./bootstrap -DPG_CONFIG="$PG_BIN/pg_config" -DAPACHE_ONLY=ON \
    -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF -DWARNINGS_AS_ERRORS=OFF -DSEND_TELEMETRY_DEFAULT=OFF \
    -DCMAKE_BUILD_TYPE=Release >/dev/null \
    && make -s -C build -j"$(nproc)" >/dev/null && sudo_ make -s -C build install >/dev/null)
  log "TimescaleDB installed into $ext_dir"
fi

# The virtual environment with the project and its development tools.
venv="$here/.venv"
stamp="$venv/.installed-$(sha256sum "$here/pyproject.toml" | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  log "installing the project into $venv"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip >/dev/null
  "$venv/bin/pip" install -q -e "$here[dev]"
  rm -f "$venv"/.installed-*
  touch "$stamp"
fi

# The dashboard's JavaScript comes from the npm registry, vendored by the build step.
if [ -f "$here/monitor/dashboard/package.json" ] && [ ! -f "$here/monitor/dashboard/static/vendor/leaflet/leaflet.js" ]; then
  log "fetching Leaflet from the npm registry"
  bash "$here/monitor/dashboard/vendor.sh"
fi
log "ready"
