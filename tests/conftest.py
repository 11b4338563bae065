"""Shared test setup: fast tests run first, then slow ones, then the Docker image tests."""

import pytest


def _order(item: pytest.Item) -> int:
    if item.get_closest_marker("docker"):
        return 2
    if item.get_closest_marker("slow"):
        return 1
    return 0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=_order)
