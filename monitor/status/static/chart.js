// The status page's chart: each operator's routing weight over the last hour, drawn as SVG from
// the collector's /status/api/history (same origin). No library; names are set as text, never
// parsed as HTML. Each figure ends with data-state="drawn", "empty" or "error".
"use strict";
(function () {
  const NS = "http://www.w3.org/2000/svg";
  const W = 640, H = 180, LEFT = 40, RIGHT = 10, TOP = 10, BOTTOM = 24;
  const GAP_MS = 5 * 60 * 1000; // scoring paused longer than this: the line breaks

  function el(name, attrs, parent) {
    const node = document.createElementNS(NS, name);
    for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
    if (parent) parent.appendChild(node);
    return node;
  }

  function label(parent, x, y, content, anchor) {
    el("text", { x: x, y: y, "text-anchor": anchor }, parent).textContent = content;
  }

  function hhmm(ms) {
    return new Date(ms).toISOString().slice(11, 16) + " UTC";
  }

  // Returns the number of lines drawn.
  function draw(figure, data) {
    const svg = figure.querySelector("svg.plot");
    const legend = figure.querySelector("ul.legend");
    svg.replaceChildren();
    legend.replaceChildren();
    const end = data.end_ms;
    const start = Math.min(data.start_ms, end - 60 * 1000);
    const x = (t) => LEFT + ((t - start) / (end - start)) * (W - LEFT - RIGHT);
    const y = (w) => TOP + (1 - w) * (H - TOP - BOTTOM);
    const point = (t, w) => x(t).toFixed(1) + "," + y(w).toFixed(1);
    for (const w of [0, 0.25, 0.5, 0.75, 1]) {
      el("line", { class: "grid", x1: LEFT, x2: W - RIGHT, y1: y(w), y2: y(w) }, svg);
      if ((w * 2) % 1 === 0) label(svg, LEFT - 6, y(w) + 4, Math.round(w * 100) + "%", "end");
    }
    label(svg, LEFT, H - 6, hhmm(start), "start");
    label(svg, W - RIGHT, H - 6, hhmm(end), "end");
    let lines = 0;
    for (const s of data.series) {
      const item = document.createElement("li");
      const swatch = document.createElement("span");
      swatch.className = "swatch s" + s.color;
      item.append(swatch, document.createTextNode(s.name));
      legend.appendChild(item);
      if (s.points.length === 0) continue;
      const group = el("g", { class: "series", "data-operator": s.operator_id }, svg);
      el("title", {}, group).textContent = s.name;
      let segment = [];
      const flush = () => {
        if (segment.length > 1) {
          el("polyline", { class: "line s" + s.color, points: segment.join(" ") }, group);
          lines += 1;
        }
        segment = [];
      };
      let previous = null;
      for (const [t, w] of s.points) {
        if (previous && t - previous[0] > GAP_MS) flush();
        else if (previous) segment.push(point(t, previous[1])); // a weight holds until the next run
        segment.push(point(t, w));
        previous = [t, w];
      }
      flush();
      el("circle", { class: "s" + s.color, cx: x(previous[0]), cy: y(previous[1]), r: 3 }, group);
    }
    if (lines === 0) {
      label(svg, W / 2, H / 2, "Not enough scoring runs in the last hour yet", "middle");
    }
    return lines;
  }

  function load(figure) {
    fetch(figure.dataset.history, { headers: { Accept: "application/json" } })
      .then((response) => {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      })
      .then((data) => {
        figure.dataset.state = draw(figure, data) > 0 ? "drawn" : "empty";
      })
      .catch((error) => {
        figure.dataset.state = "error";
        const svg = figure.querySelector("svg.plot");
        svg.replaceChildren();
        label(svg, W / 2, H / 2, "The history could not be loaded", "middle");
        console.error("status chart:", error);
      });
  }

  document.querySelectorAll("figure.chart[data-history]").forEach(load);
})();
