"""The keys under which the plugin keeps its session, each test's cell, and how many
cells the session runs."""
import pytest

SESSION = pytest.StashKey["ConformanceSession"]()
CELL = pytest.StashKey["Cell"]()
SESSION_CELLS = pytest.StashKey[int]()
