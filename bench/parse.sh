#!/usr/bin/env bash
# Loading 10,000 resources (parse + decode + validate, then analyze), release build.
# Usage: bench/parse.sh
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo bench --locked -q -p weft-api --bench parse
