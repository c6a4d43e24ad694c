"""Helpers shared by the data and metrics tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmie_pipe.data import DataRootNotFound, resolve_data_root


def real_data_root() -> Path:
    """The benchmark data, found like the CLI finds it; skips the test when it is absent."""
    try:
        return resolve_data_root().path
    except DataRootNotFound as exc:
        pytest.skip(f"real benchmark data not available: {exc}")
