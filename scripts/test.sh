#!/usr/bin/env bash
# Runs every test: build, type check, lint, then the unit, service, NSQ and container
# tests. As root it first prepares the engines the container tests use (rootful and
# rootless podman, docker); otherwise tests of an engine that is not there are skipped,
# unless CW_TEST_REQUIRE_ENGINES=1 makes a missing engine a failure (as in CI).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -eq 0 ]; then
  bash scripts/setup-test-engines.sh
else
  echo "test.sh: not root, engines are not set up; run it as root to test them all" >&2
fi
# npm ci installs exactly the locked versions; it runs again only when the lock file
# is newer than what was installed.
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
npm test
