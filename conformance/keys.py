"""The keys under which the plugin keeps its session and each test's cell."""
import pytest

SESSION = pytest.StashKey["ConformanceSession"]()
CELL = pytest.StashKey["Cell"]()
