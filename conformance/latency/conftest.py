"""The latency cells' test module goes with the latency plugin: without it
(`-p no:conformance-latency`) the conformance matrix runs alone, and no test asks for
a fixture that nothing provides."""


def pytest_ignore_collect(collection_path, config):
    if collection_path.name == "test_latency.py" and not hasattr(config.option, "latency"):
        return True
    return None  # the other plugins decide
