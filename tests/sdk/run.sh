#!/usr/bin/env bash
# ctest's sdk_test: the official Node SDKs through `sluice proxy`
# (tests/sdk/sdk_test.mjs) with the sluice binary given as $1. Exits 77, which
# ctest reports as skipped, when Node.js 20+ or the SDKs (installed by
# tools/install-npm.sh) are missing.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if [ $# -ne 1 ]; then
  echo "usage: $0 path/to/sluice" >&2
  exit 2
fi
if ! command -v node >/dev/null 2>&1; then
  echo "SKIPPED: node not found; the SDK test needs Node.js 20 or later" \
    "and bash tools/install-npm.sh"
  exit 77
fi
major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$major" -lt 20 ]; then
  echo "SKIPPED: node $(node --version) is older than the Node.js 20 the SDK test needs"
  exit 77
fi
if [ ! -f "$here/node_modules/.sluice-installed-lock" ] ||
  ! cmp -s "$here/package-lock.json" "$here/node_modules/.sluice-installed-lock"; then
  echo "SKIPPED: the SDKs in tests/sdk/package-lock.json are not installed;" \
    "run bash tools/install-npm.sh"
  exit 77
fi
exec node "$here/sdk_test.mjs" "$1"
