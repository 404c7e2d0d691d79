"""What `pip install .` ships: every subpackage of conformance/, and the top-level
fixtures/ and cpp_harness/ inside the package (pyproject.toml lists packages by name,
so a new subpackage that is not listed would be missing from an installed copy)."""
from __future__ import annotations

import tomllib
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]


def setuptools_table() -> dict:
    return tomllib.loads((REPOSITORY / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_subpackage_of_the_suite_is_shipped():
    found = {".".join(init.parent.relative_to(REPOSITORY).parts)
             for init in (REPOSITORY / "conformance").rglob("__init__.py")}
    assert found <= set(setuptools_table()["packages"]), \
        f"add {sorted(found - set(setuptools_table()['packages']))} to pyproject.toml's packages"


def test_the_top_level_fixtures_and_harness_are_shipped_inside_the_package():
    table = setuptools_table()
    assert table["package-dir"] == {"conformance.fixtures": "fixtures",
                                    "conformance.cpp_harness": "cpp_harness"}
    assert {"conformance.fixtures", "conformance.cpp_harness"} <= set(table["packages"])
    shipped = table["package-data"]
    assert (REPOSITORY / "fixtures" / "expectations.toml").is_file() and \
        "*.toml" in shipped["conformance.fixtures"]
    assert {"CMakeLists.txt", "*.cpp"} <= set(shipped["conformance.cpp_harness"])


def test_every_data_file_inside_the_suites_packages_is_shipped():
    """Files other than Python in a package directory (the latency spreads, say) reach
    an installed copy only when package-data names them."""
    import fnmatch

    shipped = setuptools_table()["package-data"]
    for package in setuptools_table()["packages"]:
        directory = REPOSITORY / setuptools_table()["package-dir"].get(
            package, package.replace(".", "/"))
        data = [p.name for p in directory.iterdir()
                if p.is_file() and p.suffix in (".json", ".toml")]
        for name in data:
            assert any(fnmatch.fnmatch(name, pattern) for pattern in shipped.get(package, ())), \
                f"{directory.name}/{name} is not in pyproject.toml's package-data"


def test_every_tox_environment_installs_the_pins_of_the_default_stack_and_two_extras():
    """tox installs the package without its dependencies (each environment brings its own
    torch): its [base] list must be pyproject's with the families and serve extras, less
    torch and torchvision, or a pin drifts and an environment runs another stack than it
    says."""
    import configparser
    import tomllib

    project = tomllib.loads((REPOSITORY / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    wanted = {pin for pin in project["dependencies"] + extras["families"] + extras["serve"]
              if not pin.startswith(("torch==", "torchvision=="))}
    tox = configparser.ConfigParser(interpolation=None)
    tox.read(REPOSITORY / "tox.ini")
    assert set(tox["base"]["deps"].split()) == wanted
