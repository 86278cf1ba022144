#!/usr/bin/env bash
# Installs the npm packages the SDK test (tests/sdk) uses: the official
# Anthropic and OpenAI SDKs at the exact versions tests/sdk/package-lock.json
# pins, into tests/sdk/node_modules (git-ignored). Idempotent: nothing is
# fetched when what is installed matches the lock. Without node and npm it
# says so and succeeds; the SDK test is then skipped. Used by the README's
# test command and .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=tests/sdk
stamp="$dir/node_modules/.sluice-installed-lock"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "install-npm: node or npm not found: the SDK test (ctest -L sdk) will be skipped"
  exit 0
fi
if [ -f "$stamp" ] && cmp -s "$dir/package-lock.json" "$stamp"; then
  echo "install-npm: the SDKs in $dir/package-lock.json are installed"
  exit 0
fi
echo "install-npm: installing $dir/package-lock.json"
npm ci --prefix "$dir" --no-audit --no-fund
cp "$dir/package-lock.json" "$stamp"
