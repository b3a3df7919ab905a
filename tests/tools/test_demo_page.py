"""tools/demo.py: the page's answers to bad input, the command line, and the page in a real
browser (headless Chromium driven through chromedriver by Selenium, both installed by
scripts/setup.sh): upload, class names, result, and a bad input's message.

GSNET_UPDATE_SCREENSHOT=1 saves the browser test's screenshot as docs/demo_screenshot.png (the
README's picture) instead of in the test's temporary folder.
"""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from gsnet.predictor import Predictor

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
REPO_ROOT = Path(__file__).resolve().parents[2]
CLASSES = "building, road, tree, water"
EXAMPLE_CLASSES = "road, water"
# Bounds of the browser test's waits (seconds): generous for a loaded CI machine.
SERVER_START_S = 180
PAGE_WAIT_S = 120


@pytest.fixture
def tool(load_tool):
    return load_tool("demo")


@pytest.fixture
def page(tool, toy_model, tmp_path):
    predictor = Predictor.from_model(toy_model, tile_size=96, progress=False)
    return tool.DemoPage(predictor, tmp_path / "work", max_classes=5)


def _no_progress(fraction, desc=None):
    pass


def _write_without_usable_bands(path):
    with rasterio.open(
        path, "w", driver="GTiff", height=20, width=30, count=3, dtype="float32",
        crs="EPSG:32633", transform=from_origin(500000, 5000000, 0.5, 0.5), nodata=-9999,
    ) as dataset:  # fmt: skip
        dataset.write(np.full((3, 20, 30), -9999, np.float32))


@pytest.mark.parametrize(
    "upload, classes, message",
    [
        (None, CLASSES, "No image: upload a PNG, JPEG or GeoTIFF"),
        ("scene.png", " , ", "No class names: type the classes to look for"),
        ("scene.png", "a, b, c, d, e, f", "6 class names are too many for this demo's memory"),
        ("broken.png", CLASSES, "Cannot read image broken.png: "),
        ("nodata.tif", CLASSES, "nodata.tif has no usable bands"),
        ("notes.txt", CLASSES, "notes.txt is not a PNG, JPEG or GeoTIFF file"),
    ],
)
def test_bad_input_is_answered_in_one_line(page, write_scene, tmp_path, upload, classes, message):
    write_scene(tmp_path / "scene.png", 20, 30)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    (tmp_path / "notes.txt").write_text("building")
    _write_without_usable_bands(tmp_path / "nodata.tif")
    path = None if upload is None else str(tmp_path / upload)
    status, overlay, legend, table, files = page.segment(path, classes, _no_progress)
    assert status.startswith("<p><strong>Error:</strong> " + message)
    assert "\n" not in status and str(tmp_path) not in status
    assert (overlay, legend, table, files) == (None, "", None, None)


def test_a_geotiff_gets_areas_and_a_label_geotiff(page, write_scene, tmp_path):
    write_scene(tmp_path / "scene.tif", 30, 40)
    status, overlay, legend, table, files = page.segment(
        str(tmp_path / "scene.tif"), CLASSES, _no_progress
    )
    assert status == "<p>Segmented scene.tif (40 x 30 px) into 4 classes.</p>"
    assert overlay.size == (40, 30)
    assert list(table.columns) == ["class", "pixels", "percent", "area (m²)"]
    assert table["area (m²)"].sum() == pytest.approx(30 * 40 * 0.25, abs=0.5)
    assert [Path(f).name for f in files][:2] == ["scene_labels.png", "scene_labels.tif"]
    assert legend.count("<li>") == 4 and ">water</span>" in legend


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "No --weights given and no quick-start toy model"),
        (["--config", "configs/toy.yaml"], "--config configs/toy.yaml needs --weights"),
        (["--config", "configs/toy.yaml", "--weights", "{garbage}"], "Cannot load weights"),
        (["--weights", "{missing}"], "The weights file {missing} does not exist"),
    ],
)
def test_command_line_errors_are_one_line(tool, tmp_path, capsys, argv, message):
    paths = {"garbage": tmp_path / "garbage.pth", "missing": tmp_path / "missing.pth"}
    paths["garbage"].write_bytes(b"not a checkpoint")
    argv = [arg.format(**paths) for arg in argv]
    with pytest.raises(SystemExit) as exit_info:
        tool.main(["--quickstart-output", str(tmp_path), "--device", "cpu", *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("demo.py: error: " + message.format(**paths)) and "\n" not in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--port", "-5"], "--port must be in 0..65535, got -5"),
        (["--batch-size", "0"], "--batch-size must be at least 1, got 0"),
        (["--max-classes", "0"], "--max-classes must be at least 1, got 0"),
    ],
)
def test_bad_option_values_are_usage_errors(tool, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        tool.main(argv)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().endswith(f"error: {message}")


def test_without_gradio_the_tool_says_what_to_install(load_tool, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # what an import of a missing module does
    with pytest.raises(SystemExit) as exit_info:
        load_tool("demo")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("demo.py: error: the web demo needs the 'demo' extra (gradio is missing)")
    assert "pip install -e '.[demo]'" in err


def test_the_page_says_which_model_it_serves(tool, page):
    app = tool.build_app(page, note="No --weights given: the toy model.")
    props = [c["props"] for c in app.config["components"] if c["type"] == "markdown"]
    notes = [p.get("value") for p in props if p.get("elem_id") == "demo-note"]
    assert notes == ["No --weights given: the toy model."]


# ---------------------------------------------------------------------- in the browser
def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def demo_url(toy_weights, write_scene, tmp_path):
    """tools/demo.py serving the toy checkpoint on a free local port, with a generated PNG as
    example (classes "road, water"); stopped with Ctrl-C (SIGINT), which must end it cleanly."""
    write_scene(tmp_path / "example.png", 64, 80)
    port = _free_port()
    command = [sys.executable, "tools/demo.py", "--config", "configs/toy.yaml"]
    command += ["--weights", str(toy_weights), "--device", "cpu"]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    command += ["--example", str(tmp_path / "example.png"), "--classes", EXAMPLE_CLASSES]
    log = open(tmp_path / "demo.log", "w+")
    server = subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        env={**os.environ, "GRADIO_TEMP_DIR": str(tmp_path / "gradio")},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + SERVER_START_S
    while True:
        if server.poll() is not None:
            log.seek(0)
            pytest.fail(f"tools/demo.py ended with status {server.returncode}:\n{log.read()}")
        try:
            urllib.request.urlopen(url, timeout=5).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                server.kill()
                pytest.fail(f"tools/demo.py did not answer at {url} in {SERVER_START_S} s")
            time.sleep(0.5)
    yield url
    server.send_signal(signal.SIGINT)
    try:
        assert server.wait(timeout=60) == 0
    finally:
        if server.poll() is None:
            server.kill()
        log.close()


@pytest.fixture
def browser():
    """Headless Chromium (Debian's chromium and chromium-driver, from scripts/setup.sh)."""
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if missing:
        pytest.fail(f"{' and '.join(missing)} not found: run sh scripts/setup.sh")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--window-size=1280,1200")
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    yield driver
    driver.quit()


def _text(driver, selector):
    return driver.find_element(By.CSS_SELECTOR, selector).text


def test_the_page_segments_an_upload_in_a_browser(demo_url, browser, write_scene, tmp_path):
    write_scene(tmp_path / "scene.tif", 150, 200)  # 2 x 3 tiles of the toy's 96 px
    wait = WebDriverWait(browser, PAGE_WAIT_S)
    browser.get(demo_url)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#demo-run"))
    browser.find_element(By.CSS_SELECTOR, "#demo-image input[type=file]").send_keys(
        str(tmp_path / "scene.tif")
    )
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#demo-image a[download='scene.tif']"))

    names = browser.find_element(By.CSS_SELECTOR, "#demo-classes textarea")
    assert names.get_attribute("value") == EXAMPLE_CLASSES  # --classes
    names.send_keys(Keys.CONTROL, "a")
    names.send_keys(Keys.BACK_SPACE)
    browser.find_element(By.CSS_SELECTOR, "#demo-run").click()
    wait.until(lambda d: _text(d, "#demo-status").startswith("Error: No class names"))

    names.send_keys(CLASSES)
    browser.find_element(By.CSS_SELECTOR, "#demo-run").click()
    wait.until(lambda d: _text(d, "#demo-status").startswith("Segmented"))
    assert _text(browser, "#demo-status") == "Segmented scene.tif (200 x 150 px) into 4 classes."
    legend = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#demo-legend .name")]
    assert legend == ["building", "road", "tree", "water"]
    overlay = browser.find_element(By.CSS_SELECTOR, "#demo-overlay img")
    size = wait.until(
        lambda d: d.execute_script(
            "const img = arguments[0];"
            "return img.complete && img.naturalWidth ? [img.naturalWidth, img.naturalHeight] : 0;",
            overlay,
        )
    )
    assert size == [200, 150]
    downloads = [
        e.get_attribute("download")
        for e in browser.find_elements(By.CSS_SELECTOR, "#demo-files a[download]")
    ]
    assert downloads == [
        "scene_labels.png", "scene_labels.tif", "scene_stats.csv", "scene_overlay.png"
    ]  # fmt: skip
    assert "area (m²)" in _text(browser, "#demo-stats")
    loaded = browser.execute_script(
        "return performance.getEntriesByType('resource').map(entry => entry.name);"
    )
    assert [url for url in loaded if not url.startswith((demo_url, "data:"))] == []

    update = os.environ.get("GSNET_UPDATE_SCREENSHOT") == "1"
    screenshot = REPO_ROOT / "docs" / "demo_screenshot.png" if update else tmp_path / "demo.png"
    assert browser.save_screenshot(str(screenshot))
    print(f"screenshot: {screenshot}")

    example = browser.find_element(By.XPATH, f"//div[text()='{EXAMPLE_CLASSES}']")
    example.click()  # the example's row: its image and class names
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#demo-image a[download='example.png']"))
    browser.find_element(By.CSS_SELECTOR, "#demo-run").click()
    expected = "Segmented example.png (80 x 64 px) into 2 classes."
    wait.until(lambda d: _text(d, "#demo-status") == expected)
