// A time-series panel of the monitor: one measured series and optional threshold lines,
// drawn on canvas by uPlot. The chart follows its container's width.
import uPlot from 'uplot';

const AXIS = {
  stroke: '#5b6577',
  font: '12px system-ui, -apple-system, "Segoe UI", Roboto, sans-serif',
  grid: { stroke: '#eef0f4', width: 1 },
  ticks: { stroke: '#e1e5ec', width: 1, size: 4 },
};

function clockTime(seconds, withSeconds, locale) {
  const opts = { hour: '2-digit', minute: '2-digit' };
  if (withSeconds) opts.second = '2-digit';
  return new Date(seconds * 1000).toLocaleTimeString(locale && locale !== 'en' ? locale : [], opts);
}

export class TimeChart {
  /**
   * @param {HTMLElement} host where the canvas goes
   * @param {object} o label, timeLabel (the legend's name for the time), locale (of the
   *   clock times), color, fill, format(value) -> text, step (a stepped line for counts),
   *   incrs (the y tick steps), floor (the least top of the y scale)
   */
  constructor(host, o) {
    this.host = host;
    this.o = o;
    this.thresholds = [];
    this.range = [0, 1];
    this.latest = null;
    this.plot = null;
  }

  /** Threshold lines ({label, value, color}); rebuilds the chart when they change. */
  setThresholds(list) {
    const key = JSON.stringify(list);
    if (key === this.thresholdKey) return;
    this.thresholdKey = key;
    this.thresholds = list;
    if (this.plot) {
      this.plot.destroy();
      this.plot = null;
    }
  }

  build(data) {
    const o = this.o;
    const width = Math.max(280, this.host.clientWidth);
    const latestOr = (v) => (v == null ? this.latest : v);
    const series = [
      { label: o.timeLabel || 'Time', value: (u, v) => { const t = v == null ? this.latestT : v; return t == null ? '–' : clockTime(t, true, o.locale); } },
      {
        label: o.label,
        stroke: o.color,
        width: 2,
        fill: o.fill,
        points: { show: false },
        paths: o.step ? uPlot.paths.stepped({ align: 1 }) : undefined,
        // Off the chart, the legend reads the latest value: the monitor's "now".
        value: (u, v) => { const x = latestOr(v); return x == null ? '–' : o.format(x); },
      },
      ...this.thresholds.map((t) => ({
        label: t.label,
        stroke: t.color,
        width: 1.5,
        dash: [6, 5],
        points: { show: false },
        value: () => o.format(t.value),
      })),
    ];
    this.plot = new uPlot({
      width,
      height: o.height || 210,
      padding: [14, 32, 0, 2],
      cursor: { drag: { x: false, y: false }, points: { size: 7 } },
      legend: { live: true },
      scales: {
        x: { time: true, range: () => this.range },
        y: {
          range: (u, min, max) => {
            const top = Math.max(o.floor || 1, ...this.thresholds.map((t) => t.value * 1.2));
            return [0, Math.max(top, (max || 0) * 1.15)];
          },
        },
      },
      axes: [
        // Room for a clock time with seconds ("07:15:30 PM") under each tick.
        { ...AXIS, space: 90, values: (u, splits, i, space, incr) => splits.map((t) => clockTime(t, incr < 60, o.locale)) },
        { ...AXIS, size: 52, incrs: o.incrs, values: (u, vals) => vals.map((v) => o.format(v)) },
      ],
      series,
    }, data, this.host);
    if (!this.observer && 'ResizeObserver' in window) {
      this.observer = new ResizeObserver(() => {
        const w = Math.max(280, this.host.clientWidth);
        if (this.plot && Math.abs(this.plot.width - w) > 1) this.plot.setSize({ width: w, height: this.plot.height });
      });
      this.observer.observe(this.host);
    }
  }

  /** points: [{t (seconds), v}] in time order; [from, to] the time range shown. */
  update(points, from, to) {
    this.range = [from, to];
    const xs = points.map((p) => p.t);
    const ys = points.map((p) => p.v);
    this.latest = ys.length ? ys[ys.length - 1] : null;
    this.latestT = xs.length ? xs[xs.length - 1] : null;
    const data = [xs, ys, ...this.thresholds.map((t) => xs.map(() => t.value))];
    if (!this.plot) this.build(data);
    else this.plot.setData(data);
  }
}
