#!/usr/bin/env bash
# Delivery under faults: scripts/chaos.sh (tests/chaos.rs), run once here by scripts/test.sh.
#
# The chaos scenarios are #[ignore]d, so the `cargo nextest run` step of scripts/test.sh
# compiles them but does not run them; this suite runs them, one at a time (they time
# things and start their own PostgreSQL, Redis and kefu processes). About 1.5-3 minutes.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
exec scripts/chaos.sh
