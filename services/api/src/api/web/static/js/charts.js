// Line charts on the vendored uPlot (ES module, MIT): ROC curves and training curves.
import uPlot from "../vendor/uplot/uPlot.esm.js";

const COLOURS = ["#0b5d7a", "#d55e00", "#009e73", "#cc79a7", "#e69f00"];

export function lineChart(target, { title, x, series, xLabel, yLabel, width = 520, height = 280, points = false, xRange, yRange, integerX = false }) {
  const opts = {
    title, width: Math.min(width, Math.max(280, target.clientWidth || width)), height,
    scales: { x: { time: false, ...(xRange ? { range: xRange } : {}) }, y: yRange ? { range: yRange } : {} },
    axes: [{ label: xLabel, ...(integerX ? { incrs: [1, 2, 5, 10, 20, 50, 100] } : {}) }, { label: yLabel }],
    series: [{ label: xLabel }, ...series.map((s, i) => ({ label: s.label, stroke: s.colour || COLOURS[i % COLOURS.length], width: 2, points: { show: s.points ?? points, size: s.size || 5 }, paths: s.paths }))],
  };
  const chart = new uPlot(opts, [x, ...series.map((s) => s.values)], target);
  target.dataset.points = String(x.length);
  return chart;
}

// ROC from validation points (specificity, sensitivity) with the operating point as a dot.
export function rocChart(target, roc, op, width = 520) {
  const pts = [...roc].map((p) => [1 - p.specificity, p.sensitivity]).sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  const x = pts.map((p) => p[0]);
  const opSeries = x.map(() => null);
  if (op && op.specificity !== undefined) {
    // The operating point is plotted at the nearest x, so it sits on the curve it came from.
    const fx = 1 - op.specificity;
    let best = 0;
    x.forEach((v, i) => { if (Math.abs(v - fx) < Math.abs(x[best] - fx)) best = i; });
    opSeries[best] = op.sensitivity;
  }
  return lineChart(target, {
    title: "Validation ROC", width, x, xLabel: "1 − specificity", yLabel: "sensitivity", xRange: [0, 1], yRange: [0, 1],
    series: [{ label: "ROC", values: pts.map((p) => p[1]) }, { label: "operating point", values: opSeries, points: true, size: 12, colour: "#d55e00", paths: () => null }],
  });
}
