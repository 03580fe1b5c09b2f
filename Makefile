# The two commands: `make serve` (set up, then run the service on embedded defaults)
# and `make test` (set up, then run every check CI runs).
.PHONY: setup serve test proto lint

setup:
	./scripts/setup.sh

serve: setup
	HF_HUB_OFFLINE=1 .venv/bin/ttc-router serve

test: setup
	./scripts/test.sh

proto: setup
	.venv/bin/python -m router.api.protogen

lint: setup
	.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy
