"""The browser side of saikei's figures: one small renderer, inlined in every figure.

`RENDERER_JS` defines `window.__saikeiFigure(spec)` once per page; each figure's
own script then calls it with the figure's spec (see `_figures.py`). Nothing is
loaded from the network.
"""

STYLE = """
.saikei-figure { font: 12px/1.3 system-ui, -apple-system, "Segoe UI", sans-serif;
  color: #222; margin: 6px 0; }
.saikei-figure .sk-title { font-weight: 600; margin-bottom: 4px; }
.saikei-figure .sk-controls { display: flex; flex-wrap: wrap; gap: 4px 16px; margin: 4px 0; }
.saikei-figure .sk-controls label { display: flex; align-items: center; gap: 6px; }
.saikei-figure .sk-controls input[type=range] { width: 160px; }
.saikei-figure .sk-controls .sk-value { min-width: 5em; font-variant-numeric: tabular-nums; }
.saikei-figure .sk-panels { display: flex; flex-wrap: wrap; gap: 10px; align-items: flex-start; }
.saikei-figure .sk-panel { display: inline-block; }
.saikei-figure .sk-caption { font-size: 11px; color: #555; margin: 2px 0; }
.saikei-figure .sk-tip { min-height: 1.3em; color: #333; font-variant-numeric: tabular-nums; }
.saikei-figure canvas { display: block; }
"""

RENDERER_JS = r"""
(function () {
  if (window.__saikeiFigure) { return; }

  function decode(b64) {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    return new Float32Array(bytes.buffer);
  }

  function colour(spec, v) {
    if (!isFinite(v)) { return [221, 221, 221]; }
    let t = (v - spec.vmin) / ((spec.vmax - spec.vmin) || 1);
    t = Math.max(0, Math.min(1, t));
    let lo, hi, s;
    if (spec.diverging) {
      if (t < 0.5) { lo = [33, 102, 172]; hi = [255, 255, 255]; s = t / 0.5; }
      else { lo = [255, 255, 255]; hi = [178, 24, 43]; s = (t - 0.5) / 0.5; }
    } else { lo = [255, 255, 255]; hi = [8, 48, 107]; s = t; }
    return [0, 1, 2].map((i) => Math.round(lo[i] + (hi[i] - lo[i]) * s));
  }

  function fmt(v) {
    if (!isFinite(v)) { return String(v); }
    const a = Math.abs(v);
    return (a !== 0 && (a < 1e-3 || a >= 1e4)) ? v.toExponential(3) : v.toFixed(4);
  }

  function textWidth(ctx, labels) {
    let w = 0;
    for (const l of labels) { w = Math.max(w, ctx.measureText(l).width); }
    return Math.ceil(w);
  }

  // Draws one panel (rows x cols) of `values` starting at `offset`.
  function drawPanel(spec, canvas, values, offset, tip, caption) {
    const R = spec.rows.labels.length, C = spec.cols.labels.length, cell = spec.cell;
    const showLabels = cell >= 7;
    const font = Math.max(7, Math.min(12, cell - 1)) + "px system-ui, sans-serif";
    const probe = canvas.getContext("2d");
    probe.font = font;
    const left = showLabels ? textWidth(probe, spec.rows.labels) + 6 : 0;
    const top = showLabels ? textWidth(probe, spec.cols.labels) + 6 : 0;
    const width = left + C * cell + 1, height = top + R * cell + 1;
    const ratio = window.devicePixelRatio || 1;
    canvas.width = Math.ceil(width * ratio);
    canvas.height = Math.ceil(height * ratio);
    canvas.style.width = width + "px";
    canvas.style.height = height + "px";
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, width, height);
    for (let r = 0; r < R; r++) {
      for (let c = 0; c < C; c++) {
        const [red, green, blue] = colour(spec, values[offset + r * C + c]);
        ctx.fillStyle = "rgb(" + red + "," + green + "," + blue + ")";
        ctx.fillRect(left + c * cell, top + r * cell, cell, cell);
      }
    }
    ctx.strokeStyle = "#999";
    ctx.lineWidth = 1;
    ctx.strokeRect(left + 0.5, top + 0.5, C * cell, R * cell);
    if (showLabels) {
      ctx.font = font;
      ctx.fillStyle = "#222";
      ctx.textBaseline = "middle";
      ctx.textAlign = "right";
      for (let r = 0; r < R; r++) {
        ctx.fillText(spec.rows.labels[r], left - 4, top + (r + 0.5) * cell);
      }
      for (let c = 0; c < C; c++) {
        ctx.save();
        ctx.translate(left + (c + 0.5) * cell, top - 4);
        ctx.rotate(-Math.PI / 2);
        ctx.textAlign = "left";
        ctx.fillText(spec.cols.labels[c], 0, 0);
        ctx.restore();
      }
    }
    canvas.onmousemove = (event) => {
      const box = canvas.getBoundingClientRect();
      const c = Math.floor((event.clientX - box.left - left) / cell);
      const r = Math.floor((event.clientY - box.top - top) / cell);
      if (r < 0 || c < 0 || r >= R || c >= C) { tip.textContent = ""; return; }
      tip.textContent = (caption ? caption + " \u00b7 " : "") +
        spec.rows.name + " " + r + " (" + spec.rows.labels[r] + ") \u2192 " +
        spec.cols.name + " " + c + " (" + spec.cols.labels[c] + "): " +
        fmt(values[offset + r * C + c]);
    };
    canvas.onmouseleave = () => { tip.textContent = ""; };
  }

  function legend(spec) {
    const box = document.createElement("div");
    box.className = "sk-caption";
    const bar = document.createElement("canvas");
    bar.width = 120; bar.height = 10;
    bar.style.display = "inline-block";
    bar.style.verticalAlign = "middle";
    bar.style.margin = "0 6px";
    bar.style.border = "1px solid #999";
    const ctx = bar.getContext("2d");
    for (let x = 0; x < 120; x++) {
      const [r, g, b] = colour(spec, spec.vmin + (spec.vmax - spec.vmin) * x / 119);
      ctx.fillStyle = "rgb(" + r + "," + g + "," + b + ")";
      ctx.fillRect(x, 0, 1, 10);
    }
    box.append(fmt(spec.vmin), bar, fmt(spec.vmax));
    return box;
  }

  window.__saikeiFigure = function (spec) {
    const root = document.getElementById(spec.id);
    if (!root) { return; }
    const values = decode(spec.values);
    const R = spec.rows.labels.length, C = spec.cols.labels.length;
    const dims = spec.stack.map((axis) => axis.labels.length);
    const strides = [];
    let stride = R * C;
    for (let i = dims.length - 1; i >= 0; i--) { strides[i] = stride; stride *= dims[i]; }
    if (spec.title) {
      const title = document.createElement("div");
      title.className = "sk-title";
      title.textContent = spec.title;
      root.appendChild(title);
    }
    const controls = document.createElement("div");
    controls.className = "sk-controls";
    root.appendChild(controls);
    const axes = document.createElement("div");
    axes.className = "sk-caption";
    axes.textContent = "rows: " + spec.rows.name + " \u2193 \u00b7 columns: " + spec.cols.name +
      " \u2192 \u00b7 hover a cell for its value";
    root.appendChild(axes);
    const panels = document.createElement("div");
    panels.className = "sk-panels";
    root.appendChild(panels);
    const tip = document.createElement("div");
    tip.className = "sk-tip";
    root.appendChild(tip);
    root.appendChild(legend(spec));

    if (spec.layout === "grid") {
      const count = dims.reduce((a, b) => a * b, 1);
      for (let k = 0; k < count; k++) {
        let rest = k, offset = 0;
        const parts = [];
        for (let i = dims.length - 1; i >= 0; i--) {
          const index = rest % dims[i];
          rest = Math.floor(rest / dims[i]);
          offset += index * strides[i];
          parts.unshift(spec.stack[i].name + " " + spec.stack[i].labels[index]);
        }
        const panel = document.createElement("div");
        panel.className = "sk-panel";
        const caption = document.createElement("div");
        caption.className = "sk-caption";
        caption.textContent = parts.join(" \u00b7 ");
        const canvas = document.createElement("canvas");
        panel.append(caption, canvas);
        panels.appendChild(panel);
        drawPanel(spec, canvas, values, offset, tip, caption.textContent);
      }
      return;
    }

    const index = dims.map(() => 0);
    const canvas = document.createElement("canvas");
    panels.appendChild(canvas);
    const redraw = () => {
      let offset = 0;
      const parts = [];
      for (let i = 0; i < dims.length; i++) {
        offset += index[i] * strides[i];
        parts.push(spec.stack[i].name + " " + spec.stack[i].labels[index[i]]);
      }
      drawPanel(spec, canvas, values, offset, tip, parts.join(" \u00b7 "));
    };
    spec.stack.forEach((axis, i) => {
      const label = document.createElement("label");
      const name = document.createElement("span");
      name.textContent = axis.name;
      const slider = document.createElement("input");
      slider.type = "range";
      slider.min = 0;
      slider.max = dims[i] - 1;
      slider.value = 0;
      slider.dataset.axis = axis.name;
      const shown = document.createElement("span");
      shown.className = "sk-value";
      shown.textContent = axis.labels[0] + " / " + axis.labels[dims[i] - 1];
      slider.oninput = () => {
        index[i] = Number(slider.value);
        shown.textContent = axis.labels[index[i]] + " / " + axis.labels[dims[i] - 1];
        redraw();
      };
      label.append(name, slider, shown);
      controls.appendChild(label);
    });
    redraw();
  };
})();
"""
