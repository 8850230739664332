"""A self-contained HTML report of a DeepShadows reproduction.

:func:`write_report` turns the results of
:func:`lsbg_classify.reproduction.reproduce.run_reproduction` into one HTML file that
needs nothing else: the figures (training curves, confusion matrices before
and after transfer to HSC, ROC curves of the CNN and the feature
baselines) are PNG images embedded as ``data:`` URIs, and also written as
PNG files beside the report.  Every metric is shown with its bootstrap 95%
interval next to the number the paper published.
"""

import html
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_bytes
from ..figures import new_figure, png_data_uri, save_figure
from ..training.evaluate import plot_confusion, plot_roc

__all__ = ["PAPER_REFERENCE", "PAPER_RESULTS", "REPORT_METRICS", "plot_training_curves",
           "write_report"]

#: Where :data:`PAPER_RESULTS` come from.
PAPER_REFERENCE = ("Tanoglidis, Ćiprijanović & Drlica-Wagner 2021, Astronomy and Computing 35, "
                   "100469 (arXiv:2011.12437): Table 2 (DES test set) and Table 4 (HSC)")

#: The paper's published test-set numbers, by evaluation.
PAPER_RESULTS = {
    "des_cnn": {"accuracy": 0.920, "precision": 0.903, "recall": 0.944, "roc_auc": 0.974},
    "des_svm": {"accuracy": 0.819, "roc_auc": 0.894},
    "des_random_forest": {"accuracy": 0.797, "roc_auc": 0.872},
    "hsc_before": {"accuracy": 0.821, "roc_auc": 0.902},
    "hsc_after": {"accuracy": 0.876, "precision": 0.841, "recall": 0.932, "roc_auc": 0.936},
}

#: Metrics in the report's table: key -> column heading.
REPORT_METRICS = {"accuracy": "accuracy", "precision": "precision", "recall": "recall",
                  "f1": "F1", "roc_auc": "ROC AUC"}

_STYLE = """
body { font-family: sans-serif; max-width: 70em; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #bbb; padding: 0.3em 0.6em; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.ci { color: #666; font-size: 85%; }
.paper { color: #2a5d9f; font-size: 85%; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; }
figcaption { font-size: 90%; color: #444; }
code { font-size: 90%; }
"""


def _e(value):
    return html.escape(str(value), quote=True)


def plot_training_curves(history, path, title):
    """Accuracy and loss per epoch, training and (when present) validation.

    Parameters
    ----------
    history : dict
        Keras history: ``accuracy``, ``loss`` and optionally
        ``val_accuracy``, ``val_loss`` (lists, one value per epoch).
    path : path-like
        PNG file to write.
    title : str
    """
    fig = new_figure((8, 3.2))
    axes = fig.subplots(1, 2)
    for ax, key in zip(axes, ("accuracy", "loss")):
        for name, label in ((key, "training"), (f"val_{key}", "validation")):
            values = history.get(name)
            if values:
                ax.plot(np.arange(1, len(values) + 1), values, marker="o", ms=3, label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def _both_classes(evaluation):
    return len(set(evaluation.get("y", []))) == 2


def _figures(results, folder, stem):
    """Write every figure; returns (section, caption, path) triples."""
    made = []
    for key, item in results.get("histories", {}).items():
        path = folder / f"{stem}_history_{key}.png"
        plot_training_curves(item["history"], path, item.get("title", key))
        made.append(("Training curves", item.get("title", key), path))
    evaluations = results.get("evaluations", {})
    for key, item in evaluations.items():
        path = folder / f"{stem}_confusion_{key}.png"
        plot_confusion(item["confusion"], path, title=_short(item.get("title", key)))
        made.append(("Confusion matrices", item.get("title", key), path))
    groups = {}
    for key, item in evaluations.items():
        if _both_classes(item):
            groups.setdefault(item.get("group", "test"), {})[item.get("title", key)] = (
                np.asarray(item["y"]), np.asarray(item["prob"]))
    for k, (group, curves) in enumerate(groups.items()):
        path = folder / f"{stem}_roc_{k}.png"
        plot_roc({_short(t): c for t, c in curves.items()}, path, title=group)
        made.append(("ROC curves", group, path))
    return made


def _short(title):
    # "DES test: SVM" -> "SVM" in legends and small figure titles.
    return str(title).split(": ", 1)[-1]


def _cell(entry, published):
    """One metric: value, interval and, when the paper gives it, the published value."""
    text = "&ndash;"
    if entry and entry.get("value") is not None:
        text = f"{entry['value']:.3f}"
        low, high = entry.get("ci_low"), entry.get("ci_high")
        if low is not None and high is not None:
            text += f' <span class="ci">[{low:.3f}, {high:.3f}]</span>'
    if published is not None:
        text += f'<br><span class="paper">paper {published:.3f}</span>'
    return f'<td class="num">{text}</td>'


def _metrics_html(results):
    paper = results.get("paper", PAPER_RESULTS)
    head = "".join(f"<th>{_e(v)}</th>" for v in REPORT_METRICS.values())
    rows = ["<table>", f"<tr><th>evaluation</th><th>n</th>{head}</tr>"]
    for key, item in results.get("evaluations", {}).items():
        published = paper.get(key, {})
        cells = "".join(_cell(item["metrics"].get(m), published.get(m)) for m in REPORT_METRICS)
        rows.append(f"<tr><td>{_e(item.get('title', key))}</td><td class=\"num\">"
                    f"{_e(item.get('n', ''))}</td>{cells}</tr>")
    rows.append("</table>")
    return "\n".join(rows)


def _confusion_html(results):
    rows = ["<table>", "<tr><th>evaluation</th><th>TN</th><th>FP</th><th>FN</th><th>TP</th></tr>"]
    for key, item in results.get("evaluations", {}).items():
        c = item["confusion"]
        rows.append(f"<tr><td>{_e(item.get('title', key))}</td>"
                    + "".join(f'<td class="num">{int(c[k])}</td>' for k in ("tn", "fp", "fn", "tp"))
                    + "</tr>")
    rows.append("</table>")
    return "\n".join(rows)


def _pairs_html(mapping, headings):
    rows = ["<table>", "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in headings) + "</tr>"]
    for key, value in mapping.items():
        rows.append(f"<tr><td>{_e(key)}</td><td>{_e(value)}</td></tr>")
    rows.append("</table>")
    return "\n".join(rows)


def _files_html(files):
    rows = ["<table>", "<tr><th>file</th><th>SHA-256</th><th>checked against</th></tr>"]
    for name, info in files.items():
        rows.append(f"<tr><td>{_e(name)}</td><td><code>{_e(info.get('sha256', ''))}</code></td>"
                    f"<td>{_e(info.get('verified', ''))}</td></tr>")
    rows.append("</table>")
    return "\n".join(rows)


def _figures_html(figures):
    parts, section = [], None
    for name, caption, path in figures:
        if name != section:
            parts.append(f"<h2>{_e(name)}</h2>")
            section = name
        parts.append(f'<figure><img src="{png_data_uri(Path(path).read_bytes())}" alt="{_e(caption)}">'
                     f"<figcaption>{_e(caption)} ({_e(Path(path).name)})</figcaption></figure>")
    return "\n".join(parts)


def _document(results, figures):
    title = results.get("title", "DeepShadows reproduction")
    notes = results.get("notes", [])
    body = [
        f"<h1>{_e(title)}</h1>",
        "<h2>Metrics</h2>",
        ("<p>Threshold 0.5; in brackets, percentile bootstrap 95% intervals; in blue, the "
         f"numbers published in {_e(PAPER_REFERENCE)}.</p>"),
        _metrics_html(results),
        _confusion_html(results),
        _figures_html(figures),
    ]
    if notes:
        body += ["<h2>Notes</h2>", "<ul>"] + [f"<li>{_e(n)}</li>" for n in notes] + ["</ul>"]
    if results.get("settings"):
        body += ["<h2>Settings</h2>", _pairs_html(results["settings"], ("setting", "value"))]
    if results.get("data_files"):
        body += ["<h2>Data files</h2>", _files_html(results["data_files"])]
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{_e(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")


def write_report(results, path):
    """Write the reproduction's results as one self-contained HTML file.

    Parameters
    ----------
    results : dict
        ``evaluations``: key -> {``title``, ``group`` (ROC curves of one
        group share a figure), ``n``, ``metrics`` (metric -> {``value``,
        ``ci_low``, ``ci_high``}), ``confusion`` ({``tn``, ``fp``, ``fn``,
        ``tp``}), ``y``, ``prob`` (labels and probabilities, for the ROC
        curves)}; keys of :data:`PAPER_RESULTS` are compared with the
        paper.  Optional: ``title``; ``histories``: key -> {``title``,
        ``history`` (Keras history dict)}; ``settings`` (name -> value);
        ``data_files`` (file name -> {``sha256``, ``verified``}); ``notes``
        (list of str); ``paper`` (replaces :data:`PAPER_RESULTS`).
    path : path-like
        The HTML file.  The figures are also written beside it as
        ``<stem>_<figure>.png``.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figures = _figures(results, path.parent, path.stem)
    text = _document(results, figures)
    atomic_write_bytes(path, text.encode("utf-8"))
    return path
