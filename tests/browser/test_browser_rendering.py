"""Treescope renderings of saikei values, opened in a real headless Chromium.

A page holding the collapsed rendering of a small MLP and an array figure of a
NamedArray is written to disk, opened with Selenium (through the Debian
`chromium-driver`, so nothing is downloaded) and driven like a user would: the
first fold toggle is clicked, the array figure is hovered. The page is checked
for a visible child layer, a drawn canvas and an empty JavaScript error log.
A screenshot and the page itself are kept under `artifacts/browser/`.

Chromium and its driver come from `scripts/_install_browser.sh` (run by
`scripts/test.sh`); the tests skip only when they are missing, quoting that
script's log.
"""

from __future__ import annotations

import pathlib
import shutil
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import pytest
import treescope

from saikei import sk, viz
from saikei.models.simple_mlp import MLP

pytestmark = pytest.mark.browser

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "artifacts" / "browser"
INSTALL_LOG = REPO_ROOT / ".venv" / "browser-install.log"
WAIT_S = 30

CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-dev-shm-usage",
    "--window-size=1200,900",
)

# Runs before any treescope script: records uncaught errors, rejected promises
# and console.error calls, so a failure inside an async rendering step that the
# browser log might not keep is still seen.
ERROR_TRAP = """<script>
window.__pageErrors = [];
window.addEventListener("error", (e) => window.__pageErrors.push("error: " + e.message));
window.addEventListener("unhandledrejection",
  (e) => window.__pageErrors.push("unhandled rejection: " + String(e.reason)));
const __consoleError = console.error;
console.error = (...args) => {
  window.__pageErrors.push("console.error: " + args.join(" "));
  __consoleError(...args);
};
</script>"""

ROOT_TEXT_JS = """
const host = document.querySelector(arguments[0] + " treescope-container");
const root = host && host.shadowRoot && host.shadowRoot.querySelector(".treescope_root");
return root ? root.innerText : null;
"""

# Counts the distinct opaque, non-white colours drawn on the figure's canvas.
CANVAS_COLOURS_JS = """
const host = document.querySelector("#array treescope-container");
const canvas = host && host.shadowRoot && host.shadowRoot.querySelector("canvas");
if (!canvas || canvas.width === 0 || canvas.height === 0) { return null; }
const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
const colours = new Set();
for (let i = 0; i < data.length; i += 4) {
  const [r, g, b, a] = [data[i], data[i + 1], data[i + 2], data[i + 3]];
  if (a > 0 && !(r === 255 && g === 255 && b === 255)) { colours.add(r + "," + g + "," + b); }
}
return {width: canvas.width, height: canvas.height, colours: colours.size};
"""

SEQ, HEADS = 4, 3


def _page(body: str) -> str:
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>saikei browser test</title>"
        f"{ERROR_TRAP}</head><body>{body}</body></html>"
    )


def _named_array() -> Any:
    # Distinct values in every cell, so a correct drawing uses many colours.
    data = jnp.arange(SEQ * HEADS, dtype=jnp.float32).reshape(SEQ, HEADS)
    return sk.nx.wrap(data, "seq", "heads")


def _array_figure_html() -> str:
    # `saikei.viz` is the `sk.ts` facade; the NamedArray is laid out by axis name.
    figure = viz.render_array(_named_array(), rows=["seq"], columns=["heads"], pixels_per_cell=16)
    return treescope.lowering.render_to_html_as_root(figure.treescope_part, compressed=False)


def _model_html() -> str:
    model = MLP.from_config(name="mlp", init_base_rng=jax.random.key(0), feature_sizes=[8, 32, 8])
    # Collapse the root and abbreviate below it, so the child layers are hidden
    # until the first toggle is clicked.
    with (
        treescope.using_expansion_strategy(max_height=1, relax_for_only_child=False),
        treescope.abbreviation_threshold.set_scoped(1),
    ):
        return treescope.render_to_html(model, compressed=False)


@pytest.fixture(scope="module")
def page_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    html = _page(
        f"<div id='model'>{_model_html()}</div><div id='array'>{_array_figure_html()}</div>"
    )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "mlp_and_named_array.html").write_text(html, encoding="utf-8")
    path = tmp_path_factory.mktemp("browser") / "page.html"
    path.write_text(html, encoding="utf-8")
    return path.as_uri()


def _missing_chromium_reason() -> str:
    detail = "no install log; run `bash scripts/test.sh`, which installs it"
    if INSTALL_LOG.exists():
        lines = INSTALL_LOG.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        detail = lines[-1] if lines else detail
    return f"headless Chromium could not be installed (chromium / chromedriver not found): {detail}"


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    chromedriver = shutil.which("chromedriver")
    if chromium is None or chromedriver is None:
        pytest.skip(_missing_chromium_reason())
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as exc:  # the test extra is incomplete: a setup bug, not a skip
        pytest.fail(f"selenium is not installed ({exc}); run `pip install -e '.[test]'`")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in CHROMIUM_ARGS:
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(service=Service(chromedriver), options=options)
    try:
        yield browser
    finally:
        browser.quit()


def _wait_for(browser: Any, script: str, *args: Any) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, WAIT_S).until(lambda b: b.execute_script(script, *args))


def _open(browser: Any, url: str) -> None:
    browser.get(url)
    browser.get_log("browser")  # drop entries left over from an earlier page
    _wait_for(browser, ROOT_TEXT_JS, "#model")


def _click_first_fold_toggle(browser: Any) -> None:
    from selenium.webdriver.common.by import By

    host = browser.find_element(By.CSS_SELECTOR, "#model treescope-container")
    # The checkbox itself is hidden; users click its label (the ▶ marker).
    host.shadow_root.find_elements(By.CSS_SELECTOR, "label")[0].click()


def _javascript_errors(browser: Any) -> list[str]:
    trapped = browser.execute_script("return window.__pageErrors || [];")
    logged = [
        f"{entry['level']}: {entry['message']}"
        for entry in browser.get_log("browser")
        if entry["level"] == "SEVERE"
    ]
    return [*trapped, *logged]


def test_first_fold_toggle_reveals_child_layer(driver: Any, page_url: str) -> None:
    _open(driver, page_url)
    collapsed = driver.execute_script(ROOT_TEXT_JS, "#model")
    assert collapsed.startswith("MLP(") and "Affine" not in collapsed, collapsed

    _click_first_fold_toggle(driver)
    expanded = _wait_for(
        driver,
        "const t = (() => {" + ROOT_TEXT_JS + "})(); return t && t.includes('Affine') ? t : null;",
        "#model",
    )
    assert "Elementwise" in expanded, expanded
    driver.save_screenshot(str(ARTIFACTS / "mlp_expanded_and_named_array.png"))


def test_array_figure_canvas_is_drawn(driver: Any, page_url: str) -> None:
    _open(driver, page_url)
    drawn = _wait_for(driver, CANVAS_COLOURS_JS)
    assert drawn["width"] > 0 and drawn["height"] > 0, drawn
    # 12 distinct values: a blank or single-colour canvas means nothing was drawn.
    assert drawn["colours"] >= SEQ * HEADS // 2, drawn
    labels = driver.execute_script(ROOT_TEXT_JS, "#array")
    assert "seq" in labels and "heads" in labels, labels


def test_page_logs_no_javascript_error(driver: Any, page_url: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    _open(driver, page_url)
    _wait_for(driver, CANVAS_COLOURS_JS)
    _click_first_fold_toggle(driver)
    # Hovering the figure runs its tooltip code, another place errors could hide.
    host = driver.find_element(By.CSS_SELECTOR, "#array treescope-container")
    canvas = host.shadow_root.find_element(By.CSS_SELECTOR, "canvas")
    ActionChains(driver).move_to_element(canvas).click(canvas).perform()
    assert _javascript_errors(driver) == []


def test_error_check_catches_a_thrown_error(driver: Any, tmp_path: pathlib.Path) -> None:
    # Guards the test above: the same check must report an error when there is one.
    path = tmp_path / "broken.html"
    path.write_text(_page("<script>throw new Error('deliberate failure');</script>"))
    driver.get(path.as_uri())
    errors = _javascript_errors(driver)
    assert any("deliberate failure" in error for error in errors), errors
