"""Under pytest-xdist the slowest scopes (a case's cells, or one cell of an independent
check) are dealt first: the costs from the previous run's records, else the shipped table
of the run's tier."""
import json
from types import SimpleNamespace

from conformance.case_groups import scope_of
from conformance.ordering import known_costs, shipped_costs, slowest_first


class Item(SimpleNamespace):
    pass


def node(cell):
    return f"conformance/test_conformance.py::test_check[{cell}]"


def items(*ids):
    return [Item(nodeid=node(i)) for i in ids]


def spec(item):
    if "::test_check[" not in item.nodeid:
        return None
    return SimpleNamespace(case=item.nodeid.split("[")[1].split("-")[0])


def test_cells_are_dealt_slowest_case_first_and_keep_their_order_within_a_case(monkeypatch):
    from conformance import ordering

    monkeypatch.setattr(ordering, "cell_spec", spec)
    found = items("small-a", "small-b", "big-a", "unknown-a", "big-b")
    found.append(Item(nodeid="tests/test_other.py::test_plain"))
    order = [i.nodeid.split("::")[1] for i in slowest_first(found, {"big": 9.0, "small": 1.0})]
    # unknown counts as the median (5 s): between big and small
    assert order == ["test_check[big-a]", "test_check[big-b]", "test_check[unknown-a]",
                     "test_check[small-a]", "test_check[small-b]", "test_plain"]
    assert slowest_first(found, {}) == found


def test_a_cell_of_an_independent_check_is_dealt_by_its_own_cost(monkeypatch):
    from conformance import ordering

    monkeypatch.setattr(ordering, "cell_spec", spec)
    family = "fam-aoti-torch-cpu-generated_models"
    found = items("fam-trace-torch-cpu-matches_eager", "mid-trace-torch-cpu-matches_eager",
                  family)
    costs = {"fam": 1.0, "mid": 5.0, family: 60.0}
    order = [i.nodeid for i in slowest_first(found, costs)]
    assert order == [node(family), node("mid-trace-torch-cpu-matches_eager"),
                     node("fam-trace-torch-cpu-matches_eager")]
    assert scope_of(node(family)) == family
    assert scope_of(node("fam-trace-torch-cpu-matches_eager")) == "fam"


def test_the_costs_come_from_the_previous_records_else_the_shipped_table(tmp_path):
    records = tmp_path / "records.jsonl"
    rows = (("a", "a-trace-torch-cpu-matches_eager", 1.0),
            ("a", "a-onnx-op17-onnxruntime-cpu-generated_models", 2.0),
            ("a", "a-trace-torch-cpu-generalizes", 4.0), ("b", None, 0.5))
    records.write_text("\n".join(json.dumps({"case": c, "duration_s": s,
                                             "nodeid": cell and node(cell)})
                                 for c, cell, s in rows))
    assert known_costs(records) == {"a": 5.0, "a-onnx-op17-onnxruntime-cpu-generated_models": 2.0,
                                    "b": 0.5}
    shipped = known_costs(tmp_path / "nowhere.jsonl")
    assert shipped == shipped_costs("ci")
    assert shipped["resnet18"] > shipped["my_cell"] > 0


def test_the_nightly_profile_is_dealt_by_the_nightly_table():
    """A nightly search takes minutes where the CI one takes seconds: a family's cell
    through the dynamo exporter weighs several times more in the nightly table."""
    ci, nightly = shipped_costs("ci"), shipped_costs("nightly")
    family = "convnets-onnx-dynamo-op20-onnxruntime-cpu-generated_models"
    assert nightly[family] > 5 * ci[family]
    assert "vgg16" in nightly and "vgg16" not in ci  # a slow case: nightly only
    assert shipped_costs("no such profile") == ci
