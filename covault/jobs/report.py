"""Human-readable views of a job result: a text table and a self-contained HTML report."""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

import numpy as np

METRIC_NAMES = {
    "accuracy": "accuracy",
    "auc": "AUC",
    "pr_auc": "PR-AUC",
    "precision": "precision",
    "recall": "recall",
    "f1": "F1",
    "r2": "R²",
    "rmse": "RMSE",
}


def format_metric(name: str, value: float | None) -> str:
    if value is None:
        return "-"
    if name == "accuracy":
        return f"{100 * value:.2f}%"
    return f"{value:.4f}"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} s"


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f}"


def _receivers(result: dict) -> str:
    """The parties the model and metrics are revealed to, or ``nobody``."""
    return ", ".join(result["reveal_model_to"]) or "nobody (the model stays secret-shared)"


def _columns(result: dict[str, Any]) -> list[tuple[str, dict[str, Any], float | None]]:
    """(title, metrics, training seconds) of the secure run and of the baselines present."""
    train = result.get("phases", {}).get("train", {}).get("seconds")
    cols = [("secure (MPC)", result.get("metrics") or {}, train)]
    plain = result.get("plaintext")
    if plain:
        cols.append(("plaintext", plain["metrics"], plain.get("seconds")))
        if plain.get("sklearn"):
            cols.append(("scikit-learn", plain["sklearn"]["metrics"], plain["sklearn"].get("seconds")))
    return cols


def _metric_names(result: dict[str, Any]) -> list[str]:
    """Metrics with a value in at least one column (AUC is absent for multi-class tasks)."""
    names: dict[str, None] = {}
    for _, metrics, _ in _columns(result):
        names.update((k, None) for k, v in metrics.items() if v is not None)
    return list(names)


def json_safe(value: Any) -> Any:
    """``value`` with numpy scalars and arrays, tuples and paths turned into JSON types; NaN and
    infinities become None (strict JSON has neither)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def psi_line(result: dict[str, Any]) -> str | None:
    """One sentence on the private set intersection of a vertical job; None for other jobs."""
    psi = result.get("psi")
    if not psi:
        return None
    sizes = psi.get("sizes") or {}
    held = ", ".join(f"{p} {n}" for p, n in sizes.items())
    line = f"rows aligned by private set intersection: {psi['intersection']} ids held by every data party" + (
        f" (ids per party: {held})" if held else ""
    )
    extra = []
    if psi.get("seconds") is not None:
        extra.append(f"{psi['seconds']:.2f} s")
    if psi.get("bytes_sent"):
        extra.append(f"{_mb(sum(psi['bytes_sent'].values()))} MB sent in all")
    return line + (f"; {', '.join(extra)}" if extra else "")


def privacy_line(result: dict[str, Any]) -> str | None:
    """One sentence on a DP-SGD job's guarantee (epsilon spent, delta, noise); None for other jobs."""
    info = result.get("privacy")
    if not info:
        return None
    return (
        f"differential privacy (DP-SGD inside MPC): epsilon {info['epsilon_spent']:.3g} at delta "
        f"{info['delta']:.3g} over the training rows (neighbours differ by one row replaced); noise multiplier {info['noise_multiplier']:.4g}, "
        f"clipping norm {info['max_grad_norm']:g}, {info['steps']} Poisson-sampled steps at rate "
        f"{info['sample_rate']:.3g}, noise surviving {info['colluding']} colluding compute "
        f"part{'y' if info['colluding'] == 1 else 'ies'}"
    )


def format_table(result: dict[str, Any]) -> str:
    """Metrics (secure vs centralised), time, and traffic per party as aligned text."""
    lines = [
        f"{result['task']} on label {result['label']!r}: protocol {result['protocol']}, "
        f"{result['train_rows']} training / {result['test_rows']} held-out rows, "
        f"{len(result['features'])} features",
    ]
    for extra in (psi_line(result), privacy_line(result)):
        if extra:
            lines.append(extra)
    lines.append("")
    cols = _columns(result)
    w = 16
    lines.append(f"{'':<16}" + "".join(f"{t:>{w}}" for t, _, _ in cols))
    for m in _metric_names(result):
        cells = "".join(f"{format_metric(m, metrics.get(m)):>{w}}" for _, metrics, _ in cols)
        lines.append(f"{METRIC_NAMES.get(m, m):<16}" + cells)
    lines.append(f"{'training time':<16}" + "".join(f"{_seconds(s):>{w}}" for _, _, s in cols))
    if not result.get("metrics"):
        lines.append("(metrics are revealed only to " + _receivers(result) + ")")
    plain = result.get("plaintext") or {}
    if plain.get("sklearn"):
        sk = plain["sklearn"]
        failed = f" failed: {sk['error']}" if sk.get("error") else ""
        lines.append(f"(scikit-learn: {sk['model']} on standardised features{failed})")
    lines += ["", f"{'party':<16}{'roles':<26}{'rows':>12}{'MB sent':>10}{'MB recv':>10}{'rounds':>8}"]
    for name, info in result["parties"].items():
        rows = f"{info['train_rows']}/{info['test_rows']}" if "data" in info["roles"] else "-"
        lines.append(
            f"{name:<16}{','.join(info['roles']):<26}{rows:>12}{_mb(result['bytes_sent'][name]):>10}"
            f"{_mb(result['bytes_received'][name]):>10}{result['rounds'][name]:>8}"
        )
    lines.append("")
    lines.append(
        f"secure run: {result['seconds']:.2f} s in all (wall {result['wall_seconds']:.2f} s with start-up); "
        f"model revealed to {_receivers(result)}"
    )
    if result.get("model_out"):
        lines.append(f"model written to {result['model_out']} (ONNX)")
    stored = result.get("model_store")
    if stored:
        lines.append(
            f"model {stored['model']!r} kept secret-shared, encrypted at rest by each compute party:"
        )
        lines += [f"  {p}: {path}" for p, path in stored["files"].items()]
    return "\n".join(lines)


def _svg_curves(curves: list[tuple[str, list[float], str]], width: int = 560, height: int = 260) -> str:
    """Inline SVG line chart of loss per epoch."""
    curves = [(n, v, c) for n, v, c in curves if v]
    if not curves:
        return "<p>No loss curve (revealed only to the model's receivers).</p>"
    pad_l, pad_r, pad_t, pad_b = 56, 16, 16, 40
    allv = [x for _, v, _ in curves for x in v]
    lo, hi = min(allv), max(allv)
    if hi - lo < 1e-12:
        hi = lo + 1.0
    lo, hi = lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo)
    n = max(len(v) for _, v, _ in curves)
    pw, ph = width - pad_l - pad_r, height - pad_t - pad_b

    def xy(i: int, v: float) -> tuple[float, float]:
        x = pad_l + (pw * i / (n - 1) if n > 1 else pw / 2)
        return x, pad_t + ph * (hi - v) / (hi - lo)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="training loss per epoch">',
        f'<rect x="{pad_l}" y="{pad_t}" width="{pw}" height="{ph}" fill="#fafafa" stroke="#ccc"/>',
    ]
    for k in range(5):
        v = lo + (hi - lo) * k / 4
        _, y = xy(0, v)
        parts.append(f'<line x1="{pad_l}" x2="{pad_l + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e5e5"/>')
        parts.append(f'<text x="{pad_l - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end">{v:.3f}</text>')
    for i in range(n):
        x, _ = xy(i, lo)
        parts.append(
            f'<text x="{x:.1f}" y="{pad_t + ph + 16}" font-size="11" text-anchor="middle">{i + 1}</text>'
        )
    parts.append(
        f'<text x="{pad_l + pw / 2}" y="{height - 6}" font-size="12" text-anchor="middle">epoch</text>'
    )
    for j, (name, values, color) in enumerate(curves):
        pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(i, v) for i, v in enumerate(values)))
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{pts}"/>')
        for i, v in enumerate(values):
            x, y = xy(i, v)
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}"/>')
        ly = pad_t + 14 + 16 * j
        lx = pad_l + pw - 170
        parts.append(
            f'<line x1="{lx}" x2="{lx + 18}" y1="{ly - 4}" y2="{ly - 4}" stroke="{color}" stroke-width="2"/>'
        )
        parts.append(f'<text x="{lx + 24}" y="{ly}" font-size="12">{html.escape(name)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


_CSS = """
body { font-family: system-ui, -apple-system, Segoe UI, sans-serif; margin: 2em auto; max-width: 900px;
       color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .5em 0; }
th, td { border-bottom: 1px solid #ddd; padding: .35em .8em; text-align: right; }
th:first-child, td:first-child, .l { text-align: left; }
.note { color: #666; font-size: .9em; }
.warn { color: #b00020; font-weight: 600; }
code { background: #f3f3f3; padding: 0 .25em; }
"""


def render_html(result: dict[str, Any]) -> str:
    """The report as one HTML document (no external resources)."""
    e = html.escape
    cols = _columns(result)
    head = "".join(f"<th>{e(t)}</th>" for t, _, _ in cols)
    rows = []
    for m in _metric_names(result):
        cells = "".join(f"<td>{format_metric(m, metrics.get(m))}</td>" for _, metrics, _ in cols)
        rows.append(f"<tr><td>{e(METRIC_NAMES.get(m, m))}</td>{cells}</tr>")
    secs = "".join(f"<td>{_seconds(s)}</td>" for _, _, s in cols)
    rows.append(f"<tr><td>training time</td>{secs}</tr>")
    plain = result.get("plaintext") or {}
    sk_note = (
        f" scikit-learn: {e(plain['sklearn']['model'])} on standardised features."
        if plain.get("sklearn")
        else ""
    )
    party_rows = []
    for name, info in result["parties"].items():
        r = f"{info['train_rows']} / {info['test_rows']}" if "data" in info["roles"] else "-"
        party_rows.append(
            f'<tr><td>{e(name)}</td><td class="l">{e(", ".join(info["roles"]))}</td><td>{r}</td>'
            f"<td>{_mb(result['bytes_sent'][name])}</td><td>{_mb(result['bytes_received'][name])}</td>"
            f"<td>{result['rounds'][name]}</td></tr>"
        )
    phase_rows = []
    for step, info in result.get("phases", {}).items():
        sent = sum(info["bytes_sent"].values())
        rounds = max(info["rounds"].values()) if info["rounds"] else 0
        phase_rows.append(
            f"<tr><td>{e(step)}</td><td>{info['seconds']:.3f}</td><td>{_mb(sent)}</td><td>{rounds}</td></tr>"
        )
    curves = [("secure (MPC)", result.get("loss_curve") or [], "#1f6feb")]
    if result.get("plaintext"):
        curves.append(("centralised plaintext", result["plaintext"].get("loss_curve") or [], "#d9480f"))
    hp = ", ".join(f"{k} = {v}" for k, v in result.get("hyperparameters", {}).items())
    model_line = (
        f"<p>Model written as ONNX to <code>{e(result['model_out'])}</code>.</p>"
        if result.get("model_out")
        else ""
    )
    psi = psi_line(result)
    psi_html = "".join(
        f"<p>{e(line[0].upper() + line[1:])}.</p>\n" for line in (psi, privacy_line(result)) if line
    )
    warn_html = "".join(
        f'<p class="warn">Warning ({e(w["type"])}): {e(w["message"])}.</p>\n'
        for w in result.get("warnings") or []
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>covault job report: {e(result["task"])}</title>
<style>{_CSS}</style></head>
<body>
<h1>Joint training report: {e(result["task"].replace("_", " "))}</h1>
<p>Label <code>{e(result["label"])}</code>, {len(result["features"])} features,
{result["train_rows"]} training and {result["test_rows"]} held-out rows from
{sum("data" in p["roles"] for p in result["parties"].values())} data parties.
Protocol <code>{e(result["protocol"])}</code> with compute parties {e(", ".join(result["compute"]))}
(transport <code>{e(result["transport"])}</code>). Model, metrics and loss curve revealed only to
{e(_receivers(result))}.</p>
{psi_html}<p class="note">Hyper-parameters: {e(hp)}.</p>
<h2>Held-out metrics</h2>
<table><tr><th>metric</th>{head}</tr>
{"".join(rows)}
</table>
<p class="note">Secure metrics are computed on the pooled held-out rows inside MPC; the centralised
baseline trains the same algorithm on the same rows pooled in one place (possible only in a local
run).{sk_note}</p>
<h2>Training loss per epoch</h2>
{warn_html}{_svg_curves(curves)}
<p class="note">Mean loss on all training rows after each epoch (cross-entropy; regression: mean squared
error of the standardised target), without the penalty term.</p>
<h2>Parties</h2>
<table><tr><th>party</th><th class="l">roles</th><th>rows (train / test)</th><th>MB sent</th><th>MB received</th>
<th>rounds</th></tr>
{"".join(party_rows)}
</table>
<h2>Steps</h2>
<table><tr><th>step</th><th>seconds (slowest compute party)</th><th>MB sent (all parties)</th><th>rounds</th></tr>
{"".join(phase_rows)}
</table>
<p>Secure run: {result["seconds"]:.2f} s ({result["wall_seconds"]:.2f} s including start-up).</p>
{model_line}
</body></html>
"""


def write_html_report(result: dict[str, Any], path: str | Path) -> Path:
    """Write :func:`render_html` of ``result`` to ``path``; the path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(render_html(result), encoding="utf-8")
    return p


def figure_html(png: bytes, alt: str) -> str:
    """An ``<img>`` holding ``png`` inline (a data URI: the report stays one file)."""
    import base64

    data = base64.b64encode(png).decode("ascii")
    return f'<p><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}" style="max-width:100%"></p>'


def render_sections_html(title: str, intro: str, sections: list[tuple[str, str]]) -> str:
    """A report of headed sections of HTML in this report's style (``covault demo --attack``)."""
    parts = "".join(f"<h2>{html.escape(h)}</h2>\n{body}\n" for h, body in sections)
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n<title>{html.escape(title)}</title>\n'
        f"<style>{_CSS}</style></head>\n<body>\n<h1>{html.escape(title)}</h1>\n<p>{html.escape(intro)}</p>\n"
        f"{parts}</body></html>\n"
    )
