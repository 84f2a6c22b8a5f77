#!/usr/bin/env bash
# The whole check: set-up, typecheck, lint, then every test (vitest). Stops at the first
# failing step. Ends with one plain line `tests: N passed, M failed[, K skipped]` and exits
# non-zero when anything failed or when no test ran at all.
# Usage: scripts/test.sh [vitest args...]   (e.g. scripts/test.sh fixtures/test to run some files)
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

step() { printf '\n== %s\n' "$*"; }

step "typecheck"
pnpm exec tsc -b tsconfig.json
pnpm exec tsc -p tsconfig.test.json

step "lint"
pnpm run --silent lint

step "tests"
mkdir -p .cache
report=.cache/vitest-report.json
rm -f "$report"
rc=0
pnpm exec vitest run --reporter=default --reporter=json --outputFile.json="$report" "$@" </dev/null || rc=$?

# Count from the JSON report. A test file that failed to load has no test results:
# it counts as one failed test, so that it can never pass unnoticed.
# shellcheck disable=SC2016 # JavaScript, not shell
summary="$(node -e '
  const fs = require("node:fs");
  let r;
  try { r = JSON.parse(fs.readFileSync(process.argv[1], "utf8")); } catch { console.log("0 0 0 0"); process.exit(0); }
  const brokenFiles = (r.testResults ?? []).filter((f) => f.status === "failed" && (f.assertionResults ?? []).length === 0).length;
  const skipped = (r.numPendingTests ?? 0) + (r.numTodoTests ?? 0);
  console.log(`${r.numPassedTests ?? 0} ${(r.numFailedTests ?? 0) + brokenFiles} ${skipped} ${r.numTotalTests ?? 0}`);
' "$report")"
read -r passed failed skipped total <<<"$summary"

echo
line="tests: ${passed} passed, ${failed} failed"
if [ "$skipped" -gt 0 ]; then line="${line}, ${skipped} skipped"; fi
echo "$line"

if [ "$total" -eq 0 ] && [ "$failed" -eq 0 ]; then
  echo "test: error: no test ran" >&2
  exit 1
fi
if [ "$failed" -gt 0 ] || [ "$rc" -ne 0 ]; then
  exit 1
fi
