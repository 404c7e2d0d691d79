"""The upload page of a served classifier in a real headless browser (Chromium through
Selenium, tests/browser.py): a user picks an image file, presses Predict and reads
eager's class; a bad image shows the server's reason. A page that posts the file in
another form field shows the refusal instead, and fails the same test."""
from __future__ import annotations

import shutil

import pytest

from tests.browser import missing_browser, start_browser
# stop_servers: every server of a test stopped after it, the planted apps importable
from tests.test_serving import classifier_subject, stop_servers  # noqa: F401

pytest.importorskip("flask", reason="the serve runtime needs flask (the serve extra)")
pytest.importorskip("waitress", reason="the serve runtime needs waitress (the serve extra)")

ANSWER_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def browser():
    driver = start_browser()
    yield driver
    driver.quit()


def predict_in_browser(driver, url: str, image_file) -> str:
    """Open the page, choose the file, press Predict: the answer the page shows."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    driver.find_element(By.ID, "file").send_keys(str(image_file))
    driver.find_element(By.CSS_SELECTOR, "#upload button[type=submit]").click()
    answer = driver.find_element(By.ID, "answer")
    WebDriverWait(driver, ANSWER_TIMEOUT_S).until(
        lambda _: answer.get_attribute("data-state") == "done")
    return answer.text


def served_page(tmp_path, app: str | None = None):
    from conformance.layout import imagenet_classes
    from conformance.serving import client

    subject = classifier_subject(tmp_path)
    served = client.ServedModel(subject.artifact.file, app=app, classes=imagenet_classes())
    return subject, served.server.url + "/"


def image_file(tmp_path, name: str):
    from conformance.checks.serving import test_images

    file = tmp_path / name
    file.write_bytes(test_images()[name])
    return file


def test_the_page_shows_eagers_class_for_an_uploaded_image(tmp_path, browser):
    from conformance.checks.serving import eager_class
    from conformance.layout import imagenet_classes
    from conformance.serving.images import load_classes

    subject, url = served_page(tmp_path)
    photo = image_file(tmp_path, "photo.jpg")
    class_id, _ = eager_class(subject, photo.read_bytes())
    name = load_classes(imagenet_classes())[class_id]
    assert predict_in_browser(browser, url, photo) == f"{name} (class {class_id})"
    shown = predict_in_browser(browser, url, image_file(tmp_path, "gray.png"))
    assert shown.startswith("error: the image is grayscale (mode L)")


def test_a_page_that_sends_the_file_in_another_field_shows_the_refusal(tmp_path, browser):
    _, url = served_page(tmp_path, app="tests.broken_serving:wrong_field_page_app")
    shown = predict_in_browser(browser, url, image_file(tmp_path, "photo.jpg"))
    assert shown == "error: no file: send the image in the form field 'file'"


def test_what_a_browser_test_lacks_is_named(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert missing_browser().startswith(("no Chromium on PATH", "selenium is not installed"))
    monkeypatch.setattr(shutil, "which", lambda name: None if name == "chromedriver" else name)
    assert missing_browser().startswith(("no chromedriver", "selenium is not installed"))
