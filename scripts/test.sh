#!/usr/bin/env bash
# Every check CI runs: generated code in sync with protos/, lint, types, unit and
# integration tests (real Redis, real Triton through PyTriton, real gRPC server).
set -uo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
bin=.venv/bin
status=0
step() { echo "== $*"; "$@" || status=1; }
step "$bin/python" -m router.api.protogen --check
step "$bin/ruff" check .
step "$bin/ruff" format --check .
step "$bin/mypy"
echo "== pytest"
"$bin/python" -m pytest -p no:cacheprovider "$@"
rc=$?
# pytest exits 5 when it collected no tests: that is a failure of the suite, not a pass.
if [ $rc -eq 5 ]; then echo "pytest collected no tests"; rc=1; fi
[ $rc -ne 0 ] && status=$rc
exit $status
