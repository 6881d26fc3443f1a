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
# npm install, not npm ci: the lock file cannot list the linter's binaries for other
# platforms (a registry that serves only this platform's), which npm ci refuses; npm
# install keeps the locked versions and leaves the lock file as it is.
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm install --no-audit --no-fund
fi
npm test
