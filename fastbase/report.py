"""Layer 8: the report folder of a command-line run (`fastbase train`, `demo`, `interpret`).

`write_report` turns a run's summary (a plain dict, the same one `--json` prints) and the PNGs
beside it into `report.html`: one self-contained page, with the images inlined as base64 data
URIs, the CSS inline, no script and nothing fetched, so it opens from a mail attachment or a CI
artifact. `StageLog` records each training stage (one `fit` call) for it, and `plot_training`
draws the loss, learning-rate and metric curves across the stages, which the Recorder cannot do
because it starts afresh with every fit.
"""
from __future__ import annotations

import base64
import html
import math
import time
from datetime import datetime

from . import __version__
from .callback import Callback, Order
from .core import Path
from .data import DatasetType
from .figures import save_figure, subplots
from .interpret import ClassificationInterpretation

__all__ = ["REPORT_FILE", "StageLog", "plot_training", "save_interpretation", "save_lr_find_plot",
           "write_report"]

REPORT_FILE = "report.html"


def _number(value):
    """A float for JSON: NaN (no validation set, a cancelled epoch) becomes None."""
    value = float(value)
    return None if math.isnan(value) else value


class StageLog(Callback):
    """Keeps one training stage for the report: a row per epoch (train_loss, valid_loss, each metric,
    seconds) and, once the fit ends, the recorder's per-batch losses and learning rates."""
    order = Order.STAGE_LOG

    def __init__(self, name: str):
        self.stage, self.epochs = name, []
        self.losses, self.smooth_losses, self.lrs, self.n_batches = [], [], [], []

    def before_epoch(self):
        self._start = time.perf_counter()

    def after_epoch(self):
        recorder = self.learn.recorder
        names = recorder.value_names
        values = recorder.values[-1] if recorder.values else []
        row = {"epoch": self.learn.epoch + 1, **{n: _number(v) for n, v in zip(names, values)}}
        row["seconds"] = round(time.perf_counter() - self._start, 2)
        self.epochs.append(row)

    def after_fit(self):
        recorder = self.learn.recorder
        self.losses, self.smooth_losses = recorder.losses, recorder.smooth_losses
        self.lrs, self.n_batches = [float(lr) for lr in recorder.lrs], list(recorder.n_batches)

    def as_dict(self) -> dict:
        """What the summary (and `--json`) keeps: the stage's name and its epoch rows."""
        return {"name": self.stage, "epochs": list(self.epochs)}


# --- plots ------------------------------------------------------------------------------------------
def save_lr_find_plot(recorder, folder) -> Path:
    """`folder/lr_find.png`: the recorder's loss against lr after lr_find, suggestions marked; the
    skipped ends scale with the number of points, so a short run still draws."""
    n = len(recorder.lrs)
    fig = recorder.plot(skip_start=min(10, n // 5), skip_end=min(5, n // 10), suggestion=True)
    return save_figure(fig, Path(folder) / "lr_find.png", dpi=90)


def save_interpretation(learn, folder, k: int = 9) -> list:
    """`folder/top_losses.png` (the `k` worst validation images) and `folder/confusion_matrix.png`;
    returns the most confused pairs as [actual, predicted, count] lists."""

    folder = Path(folder)
    interp = ClassificationInterpretation.from_learner(learn, ds_type=DatasetType.Valid)
    interp.plot_top_losses(min(k, len(learn.data.valid_ds)), heatmap=False, return_fig=True,
                           save_to=folder / "top_losses.png")  # the figures come back closed
    interp.plot_confusion_matrix(return_fig=True, save_to=folder / "confusion_matrix.png")
    return [[str(a), str(p), int(n)] for a, p, n in interp.most_confused(min_val=1)]


def plot_training(stages: list[StageLog]) -> dict:
    """{'losses', 'lr', 'metrics'} -> Figure, each across all stages, with a dashed line where a new
    stage starts: training loss per batch (raw and smoothed) and validation loss per epoch; the
    learning rate (last layer group) per batch; each metric per epoch. 'metrics' is left out when
    no metric was recorded."""
    import matplotlib.pyplot as plt
    import numpy as np

    figs, starts, offset = {}, [], 0
    fig, ax = subplots(figsize=(7, 4))
    for i, stage in enumerate(stages):
        x = np.arange(offset, offset + len(stage.losses))
        ax.plot(x, stage.losses, color="C0", alpha=0.3, label="train" if i == 0 else None)
        ax.plot(x, stage.smooth_losses, color="C0", label="train (smoothed)" if i == 0 else None)
        ends = offset + np.cumsum(stage.n_batches) - 1
        valid = [(e, row.get("valid_loss")) for e, row in zip(ends, stage.epochs) if row.get("valid_loss") is not None]
        if valid:
            ax.plot(*zip(*valid), "o-", color="C1", label="valid" if i == 0 else None)
        starts.append((offset, stage.stage))
        offset += len(stage.losses)
    _mark_stages(ax, starts[1:])
    ax.set(xlabel="Batches processed", ylabel="Loss", title="Loss")
    ax.legend()
    figs["losses"] = fig

    fig, ax = subplots(figsize=(7, 3))
    ax.plot([lr for stage in stages for lr in stage.lrs])
    _mark_stages(ax, starts[1:])
    ax.set(xlabel="Batches processed", ylabel="Learning rate (head)", title="Learning-rate schedule")
    figs["lr"] = fig

    rows = [row for stage in stages for row in stage.epochs]
    names = [k for k in (rows[0] if rows else {}) if k not in ("epoch", "train_loss", "valid_loss", "seconds")]
    if names:
        fig, ax = subplots(figsize=(7, 3))
        for name in names:
            ax.plot(range(1, len(rows) + 1), [np.nan if r[name] is None else r[name] for r in rows], "o-", label=name)
        epoch_starts, n = [], 0
        for stage in stages[:-1]:
            n += len(stage.epochs)
            epoch_starts.append((n + 0.5, ""))
        _mark_stages(ax, epoch_starts)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set(xlabel="Epoch (all stages)", ylabel="Metric", title="Metrics on the validation set")
        ax.legend()
        figs["metrics"] = fig
    for fig in figs.values():
        plt.close(fig)
    return figs


def _mark_stages(ax, starts) -> None:
    for x, name in starts:
        ax.axvline(x, color="grey", linestyle="--", linewidth=1)
        if name:
            ax.annotate(name, (x, 1), xycoords=("data", "axes fraction"), xytext=(3, -12),
                        textcoords="offset points", fontsize=8, color="grey")


# --- the page --------------------------------------------------------------------------------------
_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 960px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
.meta { color: #666; margin-top: 0; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.92em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.7em; text-align: right; }
th { background: #f4f4f4; } td.text, th.text { text-align: left; }
img { max-width: 100%; height: auto; border: 1px solid #eee; margin: 0.3em 0; display: block; }
.big { font-size: 1.3em; } .note { color: #666; font-size: 0.9em; }
"""

# file -> caption; a figure whose file is absent is left out of the page
_FIGURES = {
    "lr_find.png": "Loss against the learning rate during lr_find, with the suggestions marked.",
    "losses.png": "Training loss per batch (raw and smoothed) and validation loss after each epoch.",
    "lr.png": "The one-cycle learning-rate schedule of each stage (last layer group).",
    "metrics.png": "Metrics on the validation set after each epoch.",
    "top_losses.png": "The validation images with the highest loss: prediction / actual / loss / probability "
                      "of the actual class.",
    "confusion_matrix.png": "Validation counts: rows are the actual classes, columns the predictions.",
}


def _e(value) -> str:
    return html.escape(str(value))


def _fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.2e}" if value and (abs(value) < 1e-2 or abs(value) >= 1e4) else f"{value:.4f}"
    return str(value)


def _table(header: list[str], rows: list[list], text_cols: int = 0) -> str:
    """An HTML table; the first `text_cols` columns are left-aligned text."""
    cls = lambda i: ' class="text"' if i < text_cols else ""
    head = "".join(f"<th{cls(i)}>{_e(h)}</th>" for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(f"<td{cls(i)}>{_e(_fmt(v))}</td>" for i, v in enumerate(row)) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _image(folder: Path, name: str) -> str:
    data = base64.b64encode((folder / name).read_bytes()).decode("ascii")
    return f'<img alt="{_e(name)}" src="data:image/png;base64,{data}"><p class="note">{_e(_FIGURES[name])}</p>'


def _figures(folder: Path, *names: str) -> str:
    return "".join(_image(folder, n) for n in names if (folder / n).is_file())


def _section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{anchor}"><h2>{_e(title)}</h2>{body}</section>' if body else ""


def _results(summary: dict) -> str:
    keys = [("accuracy", "accuracy"), ("error_rate", "error rate"), ("valid_loss", "validation loss"),
            ("lr", "learning rate")]
    rows = [[label, summary[k]] for k, label in keys if summary.get(k) is not None]
    rows += [[f"seconds: {k}", f"{v:.1f}"] for k, v in summary.get("seconds", {}).items()]
    return _table(["", "value"], rows, text_cols=1) if rows else ""


def _settings(summary: dict) -> str:
    data = summary.get("data", {})
    rows = [[k, v] for k, v in summary.get("settings", {}).items()]
    rows += [[f"data: {k}", v if k != "classes" else ", ".join(map(str, v))] for k, v in data.items()]
    return _table(["setting", "value"], rows, text_cols=2) if rows else ""


def _epochs(summary: dict) -> str:
    parts = []
    for stage in summary.get("stages", []):
        rows = stage["epochs"]
        if not rows:
            continue
        header = list(rows[0])
        cells = [[f"{r[h]:.1f}" if h == "seconds" else r.get(h) for h in header] for r in rows]
        parts.append(f"<h3>{_e(stage['name'])}</h3>" + _table(header, cells))
    return "".join(parts)


def _lr_find(summary: dict, folder: Path) -> str:
    found = summary.get("lr_find")
    body = _figures(folder, "lr_find.png")
    if found:
        body += _table(["suggestion", "learning rate"], [[k, v] for k, v in found.items()], text_cols=1)
    if found and summary.get("lr") is not None:
        body += f"<p>Learning rate used: <b>{_e(_fmt(summary['lr']))}</b> ({_e(summary.get('lr_source', ''))}).</p>"
    return body


def _most_confused(summary: dict) -> str:
    pairs = summary.get("most_confused")
    if pairs is None:
        return ""
    if not pairs:
        return "<p>No validation image was misclassified.</p>"
    return _table(["actual", "predicted", "count"], [list(p) for p in pairs], text_cols=2)


def write_report(folder, summary: dict, title: str | None = None) -> Path:
    """Write `folder/report.html` from `summary` and the PNGs in `folder` (see `_FIGURES`); returns
    its path. Sections without data are left out."""
    folder = Path(folder)
    command = summary.get("command", "run")
    title = title or f"fastbase {command}"
    headline = (f"validation accuracy {summary['accuracy'] * 100:.2f}%" if summary.get("accuracy") is not None
                else "")
    files = sorted({p.name for p in folder.iterdir() if p.is_file()} | {REPORT_FILE})
    body = "".join([
        f"<h1>{_e(title)}</h1>",
        (f'<p class="meta">{_e(datetime.now().strftime("%Y-%m-%d %H:%M"))} &middot; fastbase {_e(__version__)}'
         f' &middot; {_e(folder.resolve())}</p>'),
        f'<p class="big">{_e(headline)}</p>' if headline else "",
        _section("results", "Results", _results(summary)),
        _section("settings", "Run settings", _settings(summary)),
        _section("training", "Training, epoch by epoch", _epochs(summary)),
        _section("lr-find", "Learning-rate finder", _lr_find(summary, folder)),
        _section("curves", "Loss curves", _figures(folder, "losses.png", "lr.png", "metrics.png")),
        _section("top-losses", "Top losses", _figures(folder, "top_losses.png")),
        _section("confusion-matrix", "Confusion matrix", _figures(folder, "confusion_matrix.png")),
        _section("most-confused", "Most confused pairs", _most_confused(summary)),
        _section("files", "Files in this folder", "<ul>" + "".join(f"<li>{_e(f)}</li>" for f in files) + "</ul>"),
    ])
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
            f"<style>{_CSS}</style></head>\n<body>{body}</body></html>\n")
    path = folder / REPORT_FILE
    path.write_text(page, encoding="utf-8")
    return path
