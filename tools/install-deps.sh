#!/usr/bin/env bash
# Installs the Debian packages sluice builds, tests and benchmarks with.
# Idempotent: packages already present are left alone, and apt is only asked
# when something is missing. Used by the README's set-up commands and .ci/run.
set -euo pipefail

packages=(
  build-essential cmake pkg-config
  libabsl-dev libgtest-dev libgmock-dev libbenchmark-dev
  libcurl4-openssl-dev nlohmann-json3-dev libtomlplusplus-dev libcpp-httplib-dev libboost-dev
  libssl-dev zlib1g-dev
  redis-server libhiredis-dev
  clang libclang-rt-14-dev
  wrk gnuplot-nox
)

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
  [ "$status" = "installed" ] || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "install-deps: installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
