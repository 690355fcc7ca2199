"""Success / precision / normalised-precision plots, trackers ranked in the legend by score.

Every plot of one report gives a tracker the same colour (`tracker_colors`: by the tracker's place
in the report, not by its rank, which changes from plot to plot). Titles are the plot's name over
a subtitle that names the data set, split, protocol and toolkit (`analyze.report_title`).

Uses matplotlib's object API with the Agg canvas (no pyplot, no global backend switch), so it
works headless and does not disturb a caller that has its own figures open.
"""
from __future__ import annotations

import os

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from satracker_jax import utils
from satracker_jax.evaluation import metrics

# key of the averaged curve -> (file stem, title, x label, x values, legend score label, score fn)
PLOTS = {
    "success": ("success", "Success plot", "Overlap threshold",
                metrics.OVERLAP_THRESHOLDS, "AUC", lambda c: c.mean()),
    "precision": ("precision", "Precision plot", "Location error threshold [pixels]",
                  metrics.CENTER_THRESHOLDS, "P", lambda c: c[metrics.PRECISION_INDEX]),
    "norm_precision": ("norm_precision", "Normalized precision plot", "Location error threshold",
                       metrics.NORM_CENTER_THRESHOLDS, "NP", lambda c: c[metrics.NORM_PRECISION_INDEX]),
}


def tracker_colors(names) -> dict[str, tuple]:
  """{tracker: RGBA}: one colour per tracker by its place in `names` (tab10; tab20 beyond 10
  trackers), so a report's plots agree on which colour is which tracker."""
  names = list(dict.fromkeys(names))
  palette = matplotlib.colormaps["tab10" if len(names) <= 10 else "tab20"].colors
  return {name: tuple(palette[i % len(palette)]) for i, name in enumerate(names)}


def _title(name: str, subtitle: str) -> str:
  return f"{name}\n{subtitle}" if subtitle else name


def plot_curves(curves: dict[str, dict[str, np.ndarray]], out_dir: str, subtitle: str = "",
                suffix: str = "", colors: dict | None = None) -> list[str]:
  """`curves[tracker][key]` are averaged curves (fractions); writes one PNG per key
  (`<key><suffix>.png`), titled with the plot's name over `subtitle`; returns paths. `colors`:
  {tracker: colour}, default `tracker_colors(curves)`."""
  os.makedirs(out_dir, exist_ok=True)
  colors = colors or tracker_colors(curves)
  paths = []
  for key, (stem, title, xlabel, xs, score_name, score_fn) in PLOTS.items():
    ranked = sorted(curves.items(), key=lambda item: -float(score_fn(item[1][key])))
    fig = Figure(figsize=(7, 6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for name, tracker_curves in ranked:
      ys = 100.0 * np.asarray(tracker_curves[key])
      label = f"[{score_name} {100.0 * float(score_fn(tracker_curves[key])):.2f}] {name}"
      ax.plot(xs, ys, linewidth=2, label=label, color=colors[name])
    ax.set_xlim(float(xs[0]), float(xs[-1]))
    ax.set_ylim(0, 101)  # a curve at 100 % stays visible above the frame's edge
    ax.set_xlabel(xlabel)
    ax.set_ylabel("Overlap Precision [%]" if key == "success" else "Distance Precision [%]")
    ax.set_title(_title(title, subtitle))
    ax.grid(True, linestyle=":")
    ax.legend(loc="lower left" if key == "success" else "lower right", fontsize="small")
    fig.tight_layout()
    path = os.path.join(out_dir, f"{stem}{suffix}.png")
    fig.savefig(path, dpi=100)
    paths.append(path)
  return paths


def plot_attributes(attributes: dict[str, list[dict]], path: str, subtitle: str = "",
                    colors: dict | None = None) -> str:
  """Grouped bars: success AUC (%) per attribute (x, with its sequence count), one bar per tracker
  (`analyze.attribute_scores`); an attribute no scored sequence has gets no bar."""
  names = list(attributes)
  colors = colors or tracker_colors(names)
  rows = attributes[names[0]]
  fig = Figure(figsize=(max(8.0, 0.9 * len(rows) + 2), 5.0))
  FigureCanvasAgg(fig)
  ax = fig.add_subplot(1, 1, 1)
  xs = _grouped_bars(ax, len(rows), names, colors, lambda name: [
      100.0 * r["auc"] if r["auc"] is not None else 0.0 for r in attributes[name]])
  labels = [f"{r['short']}\n({r['num_sequences']})" for r in rows]
  return _save_bars(fig, ax, xs, labels, path, label_size="small", top=100, ylabel="Success AUC [%]",
                    title=_title("Success AUC per attribute", subtitle), legend_y=-0.14, ncol=4)


def _save_bars(fig, ax, xs, labels, path: str, *, top: float, ylabel: str, title: str,
               legend_y: float, ncol: int, label_size=None) -> str:
  """The finish every bar plot shares: y range and grid, the legend below the axes (inside, it
  would hide the bars near the top), saved to `path`."""
  ax.set_xticks(xs)
  ax.set_xticklabels(labels, fontsize=label_size)
  ax.set_ylim(0, top)
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  ax.grid(True, axis="y", linestyle=":")
  ax.legend(loc="upper center", bbox_to_anchor=(0.5, legend_y), ncol=ncol, fontsize="small",
            frameon=False)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  return path


def _grouped_bars(ax, groups: int, names, colors: dict, heights) -> np.ndarray:
  """One bar per tracker in each of `groups` groups (`heights(name)`: a list per group); returns
  the groups' x positions."""
  xs = np.arange(groups)
  width = 0.8 / max(len(names), 1)
  for i, name in enumerate(names):
    ax.bar(xs + (i - (len(names) - 1) / 2) * width, heights(name), width, label=name,
           color=colors[name])
  return xs


def plot_grounding_by_mode(breakdown: dict, path: str, subtitle: str = "",
                           colors: dict | None = None) -> str:
  """Bars of frame-0 grounding per mode, one per tracker (`analyze.grounding_by_mode`), with a
  tick where a random pick among the target and its identical twins would score."""
  names = list(breakdown)
  colors = colors or tracker_colors(names)
  modes = [m for m in next(iter(breakdown.values()), {}) if m != "all"] + ["all"]
  modes = [m for m in modes if m in breakdown[names[0]]] if names else []
  fig = Figure(figsize=(max(6.0, 1.3 * len(modes) + 2), 4.4 + 0.25 * ((len(names) + 2) // 3)))
  FigureCanvasAgg(fig)
  ax = fig.add_subplot(1, 1, 1)
  xs = _grouped_bars(ax, len(modes), names, colors, lambda name: [
      r["hit"] / r["videos"] if r else 0.0 for r in (breakdown[name].get(m) for m in modes)])
  first = breakdown[names[0]] if names else {}
  chance = [(x, first[m]["twin_chance"]) for x, m in zip(xs, modes)
            if first.get(m) and first[m]["twin_chance"] is not None and m != "all"]
  if chance:
    ax.scatter([c[0] for c in chance], [c[1] for c in chance], marker="_", s=900, color="k",
               zorder=3, label="a random one of the target and its twins")
  labels = [f"{m}\n({utils.plural(first[m]['videos'], 'video')})" if m in first else m
            for m in modes]
  return _save_bars(fig, ax, xs, labels, path, top=1.02, ylabel="frame-0 grounding (IoU > 0.5)",
                    title=_title("Frame-0 grounding by mode", subtitle), legend_y=-0.16, ncol=3)
