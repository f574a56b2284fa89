"""saikei's lean treescope HTML, opened in headless Chromium.

The default (compressed) `treescope.render_to_html` of a small transformer,
and the streaming HTML an IPython display sends (its parameter summaries are
filled in after the tree), are loaded in Chromium (Debian's `chromium` and
`chromium-driver`; the tests skip when they are missing). Unfolding every
node must show the whole text rendering, every copy-path button must resolve
to a path that exists in the model, and nothing may log a JavaScript error.
"""

from __future__ import annotations

import pathlib
import re
from typing import Any

import pytest
import treescope
from treescope import layout_algorithms, lowering, rendering_parts

import saikei.viz  # noqa: F401  (saikei's treescope handlers)
from tests.viz.test_compact_html import _transformer

pytestmark = pytest.mark.browser

ARTIFACTS = pathlib.Path(__file__).resolve().parents[2] / "artifacts" / "browser"

ERROR_TRAP = """<script>
window.__pageErrors = [];
window.addEventListener("error", (e) => window.__pageErrors.push("error: " + e.message));
window.addEventListener("unhandledrejection",
  (e) => window.__pageErrors.push("unhandled rejection: " + String(e.reason)));
</script>"""

ROOT_JS = """
const host = document.querySelector("treescope-container");
return host && host.shadowRoot && host.shadowRoot.querySelector(".treescope_root");
"""

UNFOLD_ALL_JS = """
const root = document.querySelector("treescope-container").shadowRoot;
for (const toggle of root.querySelectorAll(".foldable_node_toggle")) { toggle.checked = true; }
return root.querySelector(".treescope_root").innerText;
"""

PLACEHOLDERS_LEFT_JS = """
const root = document.querySelector("treescope-container").shadowRoot;
return root.querySelectorAll(".deferred_placeholder").length;
"""

# Hovering resolves a saikei button's path; treescope's buttons carry theirs.
COPY_PATHS_JS = """
const root = document.querySelector("treescope-container").shadowRoot;
const paths = [];
for (const button of root.querySelectorAll(".copybutton")) {
  button.dispatchEvent(new MouseEvent("mouseover", {bubbles: true}));
  paths.push(button.dataset.copy);
}
return paths;
"""


@pytest.fixture(scope="module")
def page_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    html = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"{ERROR_TRAP}</head><body>{treescope.render_to_html(_transformer())}</body></html>"
    )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "transformer.html").write_text(html, encoding="utf-8")
    path = tmp_path_factory.mktemp("transformer") / "transformer.html"
    path.write_text(html, encoding="utf-8")
    return path.as_uri()


@pytest.fixture(scope="module")
def streaming_page_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    display = pytest.importorskip("IPython.display")
    shown: list[str] = []
    original = display.display
    display.display = lambda html: shown.append(html.data)
    try:
        with lowering.collecting_deferred_renderings() as deferreds:
            rendering = treescope.active_renderer.get().to_foldable_representation(_transformer())
            treescope.active_expansion_strategy.get()(rendering.renderable)
        root = rendering_parts.build_full_line_with_annotations(rendering)
        assert deferreds, "the parameter summaries should be deferred"
        lowering.display_streaming_as_root(root, deferreds)
    finally:
        display.display = original
    html = f"<!DOCTYPE html><html><head><meta charset='utf-8'>{ERROR_TRAP}</head><body>"
    html += "".join(shown) + "</body></html>"
    path = tmp_path_factory.mktemp("streaming") / "transformer_streaming.html"
    path.write_text(html, encoding="utf-8")
    return path.as_uri()


def _open(driver: Any, url: str) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    WebDriverWait(driver, 30).until(lambda browser: browser.execute_script(ROOT_JS))


def _errors(driver: Any) -> list[str]:
    trapped = driver.execute_script("return window.__pageErrors || [];")
    logged = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    return [*trapped, *logged]


def _fully_expanded_text(value: Any) -> str:
    rendering = treescope.active_renderer.get().to_foldable_representation(value)
    layout_algorithms.expand_to_depth(rendering.renderable, 10**6)
    line = rendering_parts.build_full_line_with_annotations(rendering)
    return lowering.render_to_text_as_root(line)


def _words(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def test_unfolding_every_node_shows_the_whole_text_rendering(driver: Any, page_url: str) -> None:
    _open(driver, page_url)
    shown = driver.execute_script(UNFOLD_ALL_JS)
    assert _words(shown) == _words(_fully_expanded_text(_transformer()))
    assert "Array([[" in shown  # parameter values, behind the folded arrays
    driver.save_screenshot(str(ARTIFACTS / "transformer_unfolded.png"))
    assert _errors(driver) == []


def test_streaming_display_fills_in_every_summary(driver: Any, streaming_page_url: str) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    _open(driver, streaming_page_url)
    WebDriverWait(driver, 30).until(
        lambda browser: browser.execute_script(PLACEHOLDERS_LEFT_JS) == 0
    )
    shown = driver.execute_script(UNFOLD_ALL_JS)
    assert _words(shown) == _words(_fully_expanded_text(_transformer()))
    _assert_copy_paths_resolve(driver)
    assert _errors(driver) == []


def test_every_copy_button_resolves_to_a_path_in_the_model(driver: Any, page_url: str) -> None:
    _open(driver, page_url)
    _assert_copy_paths_resolve(driver)
    assert _errors(driver) == []


def _assert_copy_paths_resolve(driver: Any) -> None:
    paths = driver.execute_script(COPY_PATHS_JS)
    assert len(paths) > 400
    model = _transformer()
    for path in paths:
        assert path is not None
        eval(f"model{path}", {"model": model})
    assert ".body.sublayers[1].sublayers[1].delta.sublayers[1]" in paths


def test_clicking_a_copy_button_copies_its_path(driver: Any, page_url: str) -> None:
    _open(driver, page_url)
    button = driver.execute_script(
        "const root = document.querySelector('treescope-container').shadowRoot;"
        " return root.querySelectorAll('.copybutton.sk_path[data-k]')[5];"
    )
    driver.execute_script("arguments[0].click();", button)
    path = driver.execute_script("return arguments[0].dataset.copy;", button)
    assert path.startswith(".body.")
    # Headless Chromium may refuse clipboard access; the button then shows the path.
    state = driver.execute_script(
        "return [arguments[0].className, arguments[0].textContent];", button
    )
    assert "was_clicked" in state[0] or path in state[1], state
    assert _errors(driver) == []
