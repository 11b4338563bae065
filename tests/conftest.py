"""Shared test setup: fast tests run first, then slow ones, then the Docker image tests."""

import os

import pytest

# One OpenMP thread in the test process (before anything imports torch): torch's default of one per core
# oversubscribes a 2-core machine that is also running other work. test_model's 150-step overfit test took
# 85 s with the default and 4 s with one thread (load average 22, 2026-11-30). A value already set wins.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def _order(item: pytest.Item) -> int:
    if item.get_closest_marker("docker"):
        return 2
    if item.get_closest_marker("slow"):
        return 1
    return 0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=_order)
