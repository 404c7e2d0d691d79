"""The report page in a real headless browser (tests/browser.py), at a desktop's width
and a phone's: the gate's verdict and the new failures grouped by cause are on the first
screen, nothing runs off a phone's screen, and the grid's filters hide what they should.
The screenshots are kept (results/screenshots/), named in the run's summary."""
from __future__ import annotations

import json

import pytest

from conformance.report import cli as report
from tests.browser import screenshot_dir, start_browser
from tests.test_report import record

# The zoo's size: 38 cases by 24 targets, so the grid is as tall and wide as a real one.
CASES = [f"case{i:02d}" for i in range(38)]
TARGETS = [f"{path}-{runtime}-cpu" for path in ("trace", "script", "export", "onnx-op17",
                                                 "onnx_dynamo-op18", "compile")
           for runtime in ("torch", "libtorch", "onnxruntime", "inductor")]
EXPORT_ERROR = ("case {case}, target {target}, check {check}: the path could not export the "
                "model\n  the onnx exporter at opset 17 failed on operator aten::foo: "
                "UnsupportedOperatorError\n  reproduce: pytest -k '{case} and {target}'")


def night(run: str, broken: bool) -> list[dict]:
    records = []
    for case in CASES:
        for target in TARGETS:
            for check in ("matches_eager", "generalizes"):
                failing = broken and case in ("case03", "case17") and target.startswith("onnx-")
                message = EXPORT_ERROR.format(case=case, target=target, check=check)
                records.append(dict(record(case, target, check, "failed" if failing else
                                           "passed", message=message if failing else ""),
                                    run=run, failure_kind="export-error" if failing else None))
    return records


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    folder = tmp_path_factory.mktemp("report")
    args = ["--out", str(folder / "out"), "--history", str(folder / "h.sqlite")]
    for run, broken in (("n1", False), ("n2", True)):
        (folder / f"{run}.jsonl").write_text("\n".join(json.dumps(r) for r in
                                                       night(run, broken)))
        report.main([str(folder / f"{run}.jsonl"), *args])
    return (folder / "out" / "report.html").as_uri()


@pytest.fixture(scope="module")
def browser():
    driver = start_browser()
    yield driver
    driver.quit()


def above_the_fold(driver, selector: str) -> bool:
    return driver.execute_script(
        "const r = document.querySelector(arguments[0]).getBoundingClientRect();"
        "return r.top >= 0 && r.bottom <= window.innerHeight;", selector)


def test_the_first_screen_shows_the_verdict_and_the_grouped_failures(browser, page):
    browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    browser.set_window_size(1280, 800)
    browser.get(page)
    assert browser.find_element("id", "gate").text.startswith("Gate failed: 16 new failures (2 causes)")
    assert above_the_fold(browser, "#gate") and above_the_fold(browser, ".group")
    first = browser.find_element("css selector", ".group")
    assert "8 cells" in first.text and "aten::foo" in first.text
    browser.save_screenshot(str(screenshot_dir() / "report-desktop.png"))


def test_on_a_phone_the_grouped_failures_come_first_and_nothing_runs_off_the_page(
        browser, page):
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True})
    try:
        browser.get(page)
        assert above_the_fold(browser, "#gate") and above_the_fold(browser, ".group .error")
        overflow = browser.execute_script(
            "return document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1, f"the page is {overflow} px wider than a phone's screen"
        browser.save_screenshot(str(screenshot_dir() / "report-phone.png"))
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_the_filters_hide_rows_without_the_outcome_and_columns_of_other_paths(browser, page):
    from selenium.webdriver.support.ui import Select

    browser.get(page)
    visible_rows = ("return [...document.querySelectorAll('#grid tr[data-case]')]"
                    ".filter(r => r.style.display !== 'none').map(r => r.dataset.case)")
    assert len(browser.execute_script(visible_rows)) == len(CASES)
    Select(browser.find_element("id", "filter-outcome")).select_by_value("failed")
    assert browser.execute_script(visible_rows) == ["case03", "case17"]
    Select(browser.find_element("id", "filter-path")).select_by_value("trace")
    assert browser.execute_script(visible_rows) == []  # no trace cell of theirs failed
    shown = browser.execute_script(
        "return [...document.querySelectorAll('#grid th[data-target]')]"
        ".filter(t => t.style.display !== 'none').map(t => t.dataset.path)")
    assert set(shown) == {"trace"}
