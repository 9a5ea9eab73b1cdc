"""Shared fixtures. Ray-based fixtures live in the integration test modules (one session per module)."""
from __future__ import annotations

import os

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
