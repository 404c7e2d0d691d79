"""Under pytest-xdist the slowest cases are dealt first: the costs from the previous
run's records, else the shipped table."""
import json
from types import SimpleNamespace

from conformance.ordering import known_costs, slowest_first


class Item(SimpleNamespace):
    pass


def items(*ids):
    return [Item(nodeid=f"conformance/test_conformance.py::test_check[{i}]") for i in ids]


def test_cells_are_dealt_slowest_case_first_and_keep_their_order_within_a_case(monkeypatch):
    from conformance import ordering

    def spec(item):
        if "::test_check[" not in item.nodeid:
            return None
        case, check = item.nodeid.split("[")[1].rstrip("]").split("-")
        return SimpleNamespace(case=case, check=check)

    monkeypatch.setattr(ordering, "cell_spec", spec)
    found = items("small-a", "small-b", "big-a", "unknown-a", "big-b")
    found.append(Item(nodeid="tests/test_other.py::test_plain"))
    order = [i.nodeid.split("::")[1] for i in slowest_first(found, {"big": 9.0, "small": 1.0})]
    # unknown counts as the median (5 s): between big and small
    assert order == ["test_check[big-a]", "test_check[big-b]", "test_check[unknown-a]",
                     "test_check[small-a]", "test_check[small-b]", "test_plain"]
    assert slowest_first(found, {}) == found


def test_the_costs_come_from_the_previous_records_else_the_shipped_table(tmp_path):
    records = tmp_path / "records.jsonl"
    records.write_text("\n".join(json.dumps({"case": c, "duration_s": s})
                                 for c, s in (("a", 1.0), ("a", 2.0), ("b", 0.5))))
    assert known_costs(records) == {"a": 3.0, "b": 0.5}
    shipped = known_costs(tmp_path / "nowhere.jsonl")
    assert shipped["resnet18"] > shipped["my_cell"] > 0
