"""Shared test set-up: real servers live in tests/integration/fixtures/."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

pytest_plugins = [
    "tests.integration.fixtures.redis_server",
    "tests.integration.fixtures.backends",
    "tests.integration.fixtures.service",
]
