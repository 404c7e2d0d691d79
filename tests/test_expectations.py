"""The expectation table: parsing, version ranges, matching, verdicts, and its errors."""
import pytest

from conformance.expectations import ExpectationError, ExpectationTable, judge, load_table


def table_file(tmp_path, text):
    file = tmp_path / "expectations.toml"
    file.write_text(text)
    return file


ROWS = '''
[[expect]]
case = "my_gate_cell"
target = "trace-*"
check = "generalizes"
kind = "mismatch"
match = "diverges from eager"
reason = "tracing bakes the branch"

[[expect]]
case = "resnet*"
target = "*-cuda"
check = ["matches_eager", "gen*"]
kind = "runtime-error"
torch = "<2.0"
reason = "an old bug"
'''


def test_rows_are_parsed(tmp_path):
    first, second = load_table(table_file(tmp_path, ROWS))
    assert (first.case, first.target, first.check) == ("my_gate_cell", "trace-*", ("generalizes",))
    assert (first.kind, first.match.pattern) == ("mismatch", "diverges from eager")
    assert second.check == ("matches_eager", "gen*") and second.match is None
    assert "row 2" in second.source and not second.builtin


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


KNOWN = 'check = "c"\nkind = "mismatch"\n'


@pytest.mark.parametrize("text, message", [
    ('[[expect]]\ncase = "a"\n' + KNOWN, "needs a reason"),
    ('[[expect]]\ncase = "a"\nreason = "r"\ntorch = "two"\n' + KNOWN, "not a version range"),
    ('[[expect]]\ncase = "a"\nreason = "r"\ncases = "b"\n' + KNOWN, "unknown field"),
    ('[[expect]\n', "expectations"),
    ('[[expect]]\nreason = "r"\nkind = "mismatch"\n', "row 1: every row needs a check"),
    ('[[expect]]\nreason = "r"\nkind = "mismatch"\ncheck = []\n', "every row needs a check"),
    ('[[expect]]\nreason = "r"\ncheck = "c"\n', "row 1: the row has no kind"),
    ('[[expect]]\nreason = "r"\ncheck = "c"\nkind = "wrong"\n',
     "expectations.toml, row 1: the row has kind = 'wrong'; a row names the failure it "
     "expects, one of: export-error, runtime-error, crash, timeout, mismatch, property"),
    ('[[expect]]\nreason = "r"\n' + KNOWN + 'match = "(unclosed"\n', "not a regular expression"),
])
def test_malformed_tables_name_the_problem(tmp_path, text, message):
    with pytest.raises(ExpectationError, match=message):
        load_table(table_file(tmp_path, text))


def test_the_builtin_table_loads_and_every_row_has_a_reason():
    from conformance.layout import builtin_expectations

    rows = load_table(builtin_expectations())
    assert rows and all(row.reason for row in rows)
    assert all(row.builtin for row in rows)


def test_builtin_rows_apply_to_builtin_cases_and_user_rows_to_every_case(tmp_path):
    builtin = load_table(table_file(tmp_path, ROWS), builtin=True)[:1]
    user = load_table(table_file(tmp_path, ROWS.replace("my_gate_cell", "my_*")))[:1]
    cell = ("my_gate_cell", "trace-torch-cpu", "generalizes")
    assert ExpectationTable(builtin, "2.14.1").lookup(*cell, builtin=True) is not None
    assert ExpectationTable(builtin, "2.14.1").lookup(*cell, builtin=False) is None
    assert ExpectationTable(user, "2.14.1").lookup(*cell, builtin=False) is user[0]
    # without `builtin`, the table asks its `builtin_case`, which the plugin sets
    table = ExpectationTable(builtin + user, "2.14.1", builtin_case=lambda name: False)
    assert table.lookup(*cell) is user[0]
    table.builtin_case = lambda name: True
    assert table.lookup(*cell) is builtin[0]


MISMATCH = ("case my_gate_cell, target trace-torch-cpu, check generalizes: the trace artifact "
            "diverges from eager on the probe input 1\n  max abs error 2.0\n  reproduce: pytest x")
EXPORT_ERROR = ("case my_gate_cell, target trace-torch-cpu, check generalizes: the path could "
                "not export the model\n  RuntimeError: Can't redefine method: forward")


def verdict(tmp_path, kind, message):
    row = load_table(table_file(tmp_path, ROWS))[0]
    return judge(row, kind, message, "my_gate_cell-trace-torch-cpu-generalizes", "2.14.1")


def test_the_expected_kind_and_message_is_an_xfail_with_reason_and_observed_lines(tmp_path):
    result = verdict(tmp_path, "mismatch", MISMATCH)
    assert result.outcome == "xfail"
    assert result.message.startswith("tracing bakes the branch [expectation case='my_gate_cell'")
    assert result.message.endswith("observed mismatch: case my_gate_cell, target trace-torch-cpu, "
                                   "check generalizes: the trace artifact diverges from eager on "
                                   "the probe input 1 / max abs error 2.0")


@pytest.mark.parametrize("kind, message, why", [
    ("export-error", EXPORT_ERROR, "the failure is not the row's kind (mismatch)"),
    ("mismatch", MISMATCH.replace("diverges from", "differs from"),
     "its message does not match the row's pattern 'diverges from eager'"),
])
def test_another_failure_fails_with_what_was_expected_and_observed(tmp_path, kind, message, why):
    result = verdict(tmp_path, kind, message)
    assert result.outcome == "fail"
    first, *rest = result.message.splitlines()
    assert first.startswith("expected mismatch (tracing bakes the branch; case='my_gate_cell', "
                            "target='trace-*', check='generalizes', kind='mismatch', "
                            "match='diverges from eager' (expectations.toml, row 1)), observed "
                            f"{kind}: case my_gate_cell, target trace-torch-cpu, check generalizes")
    assert rest[:-1] == message.splitlines()[1:]  # the whole failure follows
    assert why in rest[-1]


def test_a_pass_is_an_unexpected_pass_that_names_the_row(tmp_path):
    result = verdict(tmp_path, None, "")
    assert result.outcome == "fail"
    assert result.message.startswith("UNEXPECTED PASS: my_gate_cell-trace-torch-cpu-generalizes "
                                     "passes on torch 2.14.1")
    assert "expectations.toml, row 1" in result.message and "Remove that row" in result.message


def test_a_pattern_is_not_searched_in_the_notes_every_failure_of_the_cell_carries(tmp_path):
    from conformance.expectations import judge

    table = tmp_path / "t.toml"
    table.write_text('[[expect]]\ncase = "c"\ntarget = "trace-*"\ncheck = "generalizes"\n'
                     'kind = "mismatch"\nmatch = "Python boolean"\nreason = "a baked branch"\n')
    (row,) = load_table(table)
    message = ("case c, target trace-torch-cpu, check generalizes: the trace artifact "
               "diverges from eager on the probe input (derived probe: zeros)\n"
               "  3 of 4 output elements outside tolerance\n"
               "  the export warned that it froze something of the example:\n"
               "    Converting a tensor to a Python boolean might cause the trace ...\n"
               "  reproduce: pytest 'x::test_check[c-trace-torch-cpu-generalizes]'")
    assert judge(row, "mismatch", message, "c-trace-torch-cpu-generalizes", "2.14.1").outcome \
        == "fail"


def test_a_declared_path_takes_in_its_own_targets_only():
    """`unsupported={"onnx": ...}` must not excuse (or fail as unexpected passes) the
    cells of onnx-dynamo, whose targets also start with `onnx-`."""
    import fnmatch

    from conformance.expectations import path_targets

    onnx, dynamo = path_targets("onnx"), path_targets("onnx-dynamo")
    assert fnmatch.fnmatch("onnx-op17-onnxruntime-cpu", onnx)
    assert not fnmatch.fnmatch("onnx-dynamo-op20-onnxruntime-cpu", onnx)
    assert fnmatch.fnmatch("onnx-dynamo-op20-onnxruntime-cpu", dynamo)
    assert fnmatch.fnmatch("trace-libtorch-cpu", path_targets("trace"))
