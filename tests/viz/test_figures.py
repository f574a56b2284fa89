"""sk.ts.attention_pattern, sk.ts.heatmap and sk.ts.render_to_html: data, errors, and the page in Chromium."""

from __future__ import annotations

import base64
import pathlib
import re
from typing import Any

import numpy as np
import pytest
import treescope

from saikei import sk

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "artifacts" / "browser"

_TOKENS = ["<s>", "When", " Mary", " and", " John", "\n"]


def _pattern(layers: int = 2, heads: int = 3, seq: int = len(_TOKENS)) -> np.ndarray:
    rng = np.random.default_rng(0)
    logits = np.where(
        np.tril(np.ones((seq, seq), bool)), rng.normal(size=(layers, heads, seq, seq)), -np.inf
    )
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    return (weights / weights.sum(-1, keepdims=True)).astype(np.float32)


def _decoded(figure: sk.ts.Figure) -> np.ndarray:
    return np.frombuffer(base64.b64decode(figure.spec["values"]), dtype="<f4")


def test_attention_pattern_orders_values_layer_head_query_key():
    data = _pattern()
    # Axes given in a scrambled order; the figure must lay them out by name.
    named = sk.nx.wrap(data.transpose(3, 1, 2, 0), "kv_seq", "heads", "seq", "layer")
    figure = sk.ts.attention_pattern(named, _TOKENS)
    np.testing.assert_array_equal(_decoded(figure), data.reshape(-1))
    assert [axis["name"] for axis in figure.spec["stack"]] == ["layer", "head"]
    assert figure.spec["rows"]["labels"][-1] == "\u23ce"  # a newline token stays visible
    assert figure.spec["cols"]["labels"] == figure.spec["rows"]["labels"]


def test_attention_pattern_drops_unit_batch_and_rejects_a_real_batch():
    one = _pattern(1, 1)[0, 0]
    with_batch = sk.nx.wrap(one[None], "batch", "seq", "kv_seq")
    assert sk.ts.attention_pattern(with_batch, _TOKENS).spec["stack"] == []
    two = sk.nx.wrap(np.stack([one, one]), "batch", "seq", "kv_seq")
    with pytest.raises(ValueError, match=r"\{'batch': 2\}.*array\[\{'batch': 0\}\]"):
        sk.ts.attention_pattern(two, _TOKENS)


def test_attention_pattern_errors_name_the_problem():
    named = sk.nx.wrap(_pattern()[0, 0], "seq", "kv_seq")
    with pytest.raises(ValueError, match="5 labels for an axis of size 6"):
        sk.ts.attention_pattern(named, _TOKENS[:5])
    with pytest.raises(ValueError, match="no 'kv_seq' axis"):
        sk.ts.attention_pattern(sk.nx.wrap(_pattern()[0, 0], "seq", "keys"))
    with pytest.raises(ValueError, match="layout must be one of"):
        sk.ts.attention_pattern(named, layout="carousel")


def test_heatmap_rows_columns_and_slider_axes():
    grid = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    named = sk.nx.wrap(grid, "sweep", "layer", "seq")
    figure = sk.ts.heatmap(named, rows="layer", cols="seq", col_labels=list("abcd"))
    assert [axis["name"] for axis in figure.spec["stack"]] == ["sweep"]
    np.testing.assert_array_equal(_decoded(figure), grid.reshape(-1))
    assert figure.spec["cols"]["labels"] == ["a", "b", "c", "d"]
    assert not figure.spec["diverging"]
    with pytest.raises(ValueError, match="rows='blocks' is not an axis"):
        sk.ts.heatmap(named, rows="blocks")


def test_heatmap_with_both_signs_is_diverging_and_symmetric():
    figure = sk.ts.heatmap(np.array([[-1.0, 3.0], [0.5, 0.0]]))
    assert figure.spec["diverging"]
    assert (figure.spec["vmin"], figure.spec["vmax"]) == (-3.0, 3.0)


def test_render_to_html_renders_figures_not_their_attributes():
    html = sk.ts.render_to_html(sk.ts.heatmap(np.eye(2)))
    assert html.startswith("<style>") and 'class="saikei-figure"' in html
    assert "window.__saikeiFigure({" in html
    array_figure = sk.ts.render_array(np.arange(6).reshape(2, 3))
    rendered = sk.ts.render_to_html(array_figure)
    as_root = treescope.lowering.render_to_html_as_root(
        array_figure.treescope_part, compressed=True
    )
    ids = re.compile(r"treescope_out_[0-9a-f]+")
    assert ids.sub("ID", rendered) == ids.sub("ID", as_root)
    # treescope's own render_to_html shows the TreescopeFigure object instead.
    assert "TreescopeFigure" in treescope.render_to_html(array_figure, compressed=False)
    assert "TreescopeFigure" not in sk.ts.render_to_html(array_figure, compressed=False)


def test_figure_html_is_self_contained():
    html = sk.ts.attention_pattern(
        sk.nx.wrap(_pattern(), "layer", "heads", "seq", "kv_seq"), _TOKENS
    ).to_html()
    assert not re.search(r"https?://|<script[^>]+src=|<link", html)


def test_labels_cannot_close_the_script():
    html = sk.ts.heatmap(np.eye(2), row_labels=["</script><b>x", "y"]).to_html()
    assert "</script><b>" not in html


# In a real browser ---------------------------------------------------------------------


ERROR_TRAP = """<script>
window.__pageErrors = [];
window.addEventListener("error", (e) => window.__pageErrors.push("error: " + e.message));
const __consoleError = console.error;
console.error = (...args) => { window.__pageErrors.push("console.error: " + args.join(" ")); };
</script>"""

# Distinct non-white colours drawn on a canvas.
COLOURS_JS = """
const canvas = document.querySelectorAll(arguments[0] + " canvas")[arguments[1]];
if (!canvas || canvas.width === 0) { return null; }
const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
const colours = new Set();
for (let i = 0; i < data.length; i += 4) {
  if (data[i + 3] > 0 && !(data[i] === 255 && data[i + 1] === 255 && data[i + 2] === 255)) {
    colours.add(data[i] + "," + data[i + 1] + "," + data[i + 2]);
  }
}
return {colours: colours.size, pixels: canvas.toDataURL().length};
"""


@pytest.fixture(scope="module")
def page_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    pattern = sk.nx.wrap(_pattern(), "layer", "heads", "seq", "kv_seq")
    grid = sk.nx.wrap(np.linspace(-1, 1, 12, dtype=np.float32).reshape(2, 6), "layer", "seq")
    body = "".join(
        f"<div id='{name}'>{sk.ts.render_to_html(figure)}</div>"
        for name, figure in (
            ("slider", sk.ts.attention_pattern(pattern, _TOKENS)),
            ("grid", sk.ts.attention_pattern(pattern, _TOKENS, layout="grid")),
            ("heatmap", sk.ts.heatmap(grid, col_labels=_TOKENS, title="Patching")),
        )
    )
    html = f"<!DOCTYPE html><html><head><meta charset='utf-8'>{ERROR_TRAP}</head><body>{body}</body></html>"
    path = tmp_path_factory.mktemp("figures") / "figures.html"
    path.write_text(html, encoding="utf-8")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "figures.html").write_text(html, encoding="utf-8")
    return path.as_uri()


def _errors(browser: Any) -> list[str]:
    trapped = browser.execute_script("return window.__pageErrors || [];")
    logged = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    return [*trapped, *logged]


@pytest.mark.browser
def test_figures_draw_without_javascript_errors(driver: Any, page_url: str) -> None:
    driver.get(page_url)
    assert _errors(driver) == []
    assert driver.execute_script(COLOURS_JS, "#slider", 0)["colours"] > 5
    assert len(driver.find_elements("css selector", "#grid canvas")) == 2 * 3 + 1  # + legend
    assert driver.execute_script(COLOURS_JS, "#heatmap", 0)["colours"] > 5
    driver.save_screenshot(str(ARTIFACTS / "figures.png"))


@pytest.mark.browser
def test_slider_redraws_and_hover_names_the_tokens(driver: Any, page_url: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    driver.get(page_url)
    before = driver.execute_script(COLOURS_JS, "#slider", 0)["pixels"]
    slider = driver.find_elements("css selector", "#slider input[type=range]")[1]  # head
    driver.execute_script(
        "arguments[0].value = 2; arguments[0].dispatchEvent(new Event('input'));", slider
    )
    assert driver.execute_script(COLOURS_JS, "#slider", 0)["pixels"] != before
    canvas = driver.find_elements("css selector", "#slider canvas")[0]
    size = canvas.size
    # The bottom-left cell: the last query (a newline) attending to the first key.
    # Offsets are from the canvas centre; the grid ends 1 px before the right edge.
    cell = sk.ts.attention_pattern(
        sk.nx.wrap(_pattern(), "layer", "heads", "seq", "kv_seq"), _TOKENS
    ).spec["cell"]
    x = size["width"] - 6 * cell - 1 + cell // 2 - size["width"] // 2
    y = size["height"] - cell // 2 - 2 - size["height"] // 2
    ActionChains(driver).move_to_element_with_offset(canvas, x, y).perform()
    tip = driver.find_element("css selector", "#slider .sk-tip").text
    want = f"{_pattern()[0, 2, 5, 0]:.4f}"
    assert "head 2" in tip and "query 5 (\u23ce)" in tip and "key 0 (<s>)" in tip, tip
    assert tip.endswith(want), tip
    assert _errors(driver) == []


def test_figure_inside_a_tree_renders_through_treescope():
    figure = sk.ts.heatmap(np.eye(2), title="inner")
    assert "<saikei Figure 'inner'" in treescope.render_to_text({"fig": figure})
    assert "saikeiFigure" in treescope.render_to_html({"fig": figure}, compressed=False)
