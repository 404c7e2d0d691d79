"""The expectation table: parsing, version ranges, matching, and its errors."""
import pytest

from conformance.expectations import ExpectationError, ExpectationTable, load_table


def table_file(tmp_path, text):
    file = tmp_path / "expectations.toml"
    file.write_text(text)
    return file


ROWS = '''
[[expect]]
case = "my_gate_cell"
target = "trace-*"
check = "generalizes"
reason = "tracing bakes the branch"

[[expect]]
case = "resnet*"
target = "*-cuda"
torch = "<2.0"
reason = "an old bug"
'''


def test_rows_are_parsed_with_defaults(tmp_path):
    first, second = load_table(table_file(tmp_path, ROWS))
    assert (first.case, first.target, first.check) == ("my_gate_cell", "trace-*", "generalizes")
    assert second.check == "*"
    assert "row 2" in second.source


@pytest.mark.parametrize("case, target, check, matched", [
    ("my_gate_cell", "trace-torch-cpu", "generalizes", True),
    ("my_gate_cell", "script-torch-cpu", "generalizes", False),
    ("my_gate_cell", "trace-torch-cpu", "matches_eager", False),
    ("my_gate_cell_2", "trace-torch-cpu", "generalizes", False),
])
def test_patterns_match_cells(tmp_path, case, target, check, matched):
    table = ExpectationTable(load_table(table_file(tmp_path, ROWS)), "2.14.1")
    assert (table.lookup(case, target, check) is not None) == matched


def test_rows_outside_their_torch_range_are_inactive(tmp_path):
    table = ExpectationTable(load_table(table_file(tmp_path, ROWS)), "2.14.1")
    assert table.lookup("resnet18", "trace-torch-cuda", "generalizes") is None
    old = ExpectationTable(load_table(table_file(tmp_path, ROWS)), "1.13.0")
    assert old.lookup("resnet18", "trace-torch-cuda", "generalizes") is not None


def test_unmatched_active_rows_are_listed(tmp_path):
    table = ExpectationTable(load_table(table_file(tmp_path, ROWS)), "2.14.1")
    assert [row.case for row in table.unmatched()] == ["my_gate_cell"]
    table.lookup("my_gate_cell", "trace-torch-cpu", "generalizes")
    assert table.unmatched() == []


@pytest.mark.parametrize("text, message", [
    ('[[expect]]\ncase = "a"\n', "needs a reason"),
    ('[[expect]]\ncase = "a"\nreason = "r"\ntorch = "two"\n', "not a version range"),
    ('[[expect]]\ncase = "a"\nreason = "r"\ncases = "b"\n', "unknown field"),
    ('[[expect]\n', "expectations"),
])
def test_malformed_tables_name_the_problem(tmp_path, text, message):
    with pytest.raises(ExpectationError, match=message):
        load_table(table_file(tmp_path, text))


def test_the_builtin_table_loads_and_every_row_has_a_reason():
    from conformance.session import BUILTIN_EXPECTATIONS

    rows = load_table(BUILTIN_EXPECTATIONS)
    assert rows and all(row.reason for row in rows)
