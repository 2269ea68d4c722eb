#!/usr/bin/env bash
# Vendors the dashboard's JavaScript from the npm registry into static/vendor/, so the
# page needs no CDN and no internet at run time:
#   static/vendor/leaflet/  <- leaflet's dist/ (leaflet.js, leaflet.css, images/) + LICENSE
# The version is the exact pin in package.json, and package-lock.json fixes its sha512:
# `npm ci` refuses a tarball that does not match. Idempotent: does nothing when the pinned
# version is already in place; replaces the directory in one move otherwise.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
dest="$here/static/vendor/leaflet"
log() { printf '[vendor] %s\n' "$*" >&2; }

command -v npm >/dev/null 2>&1 || { log "npm is needed to fetch Leaflet (apt-get install npm)"; exit 1; }
version=$(node -p "require(process.argv[1]).dependencies.leaflet" "$here/package.json")
case "$version" in
  [0-9]*.[0-9]*.[0-9]*) ;;
  *) log "package.json must pin leaflet to an exact version, not '$version'"; exit 1 ;;
esac

if [ -f "$dest/leaflet.js" ] && [ "$(cat "$dest/VERSION" 2>/dev/null || true)" = "$version" ]; then
  log "leaflet $version already vendored in $dest"
  exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp "$here/package.json" "$here/package-lock.json" "$tmp/"
log "fetching leaflet $version from $(npm config get registry 2>/dev/null)"
(cd "$tmp" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)

src="$tmp/node_modules/leaflet"
installed=$(node -p "require(process.argv[1]).version" "$src/package.json")
[ "$installed" = "$version" ] || { log "npm installed leaflet $installed, not $version"; exit 1; }
[ -f "$src/dist/leaflet.js" ] || { log "no dist/leaflet.js in the leaflet package"; exit 1; }

stage="$tmp/stage"
mkdir -p "$stage"
cp -R "$src/dist/." "$stage/"
cp "$src/LICENSE" "$stage/LICENSE"
printf '%s\n' "$version" >"$stage/VERSION"

mkdir -p "$(dirname "$dest")"
rm -rf "$dest.old"
[ -d "$dest" ] && mv "$dest" "$dest.old"
mv "$stage" "$dest"
rm -rf "$dest.old"
log "leaflet $version vendored into $dest"
