"""The attack evidence as a picture grid (PNG, matplotlib), text tables and HTML sections."""

from __future__ import annotations

import html
import io

import numpy as np


def grid_png(rows: list[tuple[str, np.ndarray]]) -> bytes:
    """One row of 8x8 images per ``(label, images)``, the label on the left; PNG bytes.
    Needs matplotlib (``pip install 'covault[demo]'``), imported here only."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("the attack demo's pictures need matplotlib: pip install 'covault[demo]'") from None
    cols = max(len(images) for _, images in rows)
    fig = Figure(figsize=(1.0 + 0.9 * cols + 2.2, 0.9 * len(rows) + 0.2), dpi=100)
    for r, (label, images) in enumerate(rows):
        for c in range(cols):
            ax = fig.add_subplot(len(rows), cols + 2, r * (cols + 2) + c + 3)
            ax.set_axis_off()
            if c < len(images):
                ax.imshow(
                    np.asarray(images[c]).reshape(8, 8),
                    cmap="gray_r",
                    vmin=0.0,
                    vmax=1.0,
                    interpolation="nearest",
                )
        fig.text(0.01, 1 - (r + 0.5) / len(rows), label, va="center", fontsize=9)
    fig.subplots_adjust(left=0.0, right=0.99, top=0.99, bottom=0.01, wspace=0.08, hspace=0.12)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _db(v: float) -> str:
    return "exact" if v >= 199.9 else f"{v:.1f} dB"


def table_rows(result: dict) -> list[tuple[str, str, float, float, str]]:
    """``(experiment, setting, mean MSE, median PSNR, images recovered)`` for every setting."""
    n = len(result["images"])
    rows = [
        ("guess", s["setting"], s["mean_mse"], s["median_psnr"], "-") for s in result["baselines"].values()
    ]
    rows += [
        ("federated", s["setting"], s["mean_mse"], s["median_psnr"], f"{s['recovered']}/{n}")
        for s in result["federated"]
    ]
    mpc = result["mpc"]
    who = f"covault {mpc['protocol']}, {mpc['party']}'s view"
    rows += [
        (who, s["setting"], s["mean_mse"], s["median_psnr"], f"{s['recovered']}/{n}") for s in mpc["attacks"]
    ]
    rnd = mpc["best_of_random_images"]
    rows.append(
        (
            "guess",
            f"best of {rnd['tries']} random other images per image (oracle)",
            rnd["mean_mse"],
            rnd["median_psnr"],
            "-",
        )
    )
    for r in result["secure_aggregation"]:
        for key in ("analytic", "idlg"):
            if key in r:
                s = r[key]
                rows.append(
                    (
                        f"SecAgg, {r['clients']} clients",
                        s["setting"],
                        s["mean_mse"],
                        s["median_psnr"],
                        f"{s['recovered']}/{r['clients']}",
                    )
                )
    for r in result["dp"]["rows"]:
        eps = (
            "clipped, no noise"
            if r["epsilon"] is None
            else f"ε={r['epsilon']:.3g}, σ={r['noise_multiplier']:g}"
        )
        for key in ("analytic", "idlg"):
            s = r[key]
            rows.append((f"DP {eps}", s["setting"], s["mean_mse"], s["median_psnr"], f"{s['recovered']}/{n}"))
    return rows


def format_text(result: dict) -> str:
    """The table as aligned text, with the MPC view's size and the control."""
    mpc = result["mpc"]
    lines = [
        f"{result['dataset']}; {result['model']}; images {result['images']} (labels {result['labels']})",
        "",
        f"{'experiment':<34}{'setting':<66}{'mean MSE':>10}{'PSNR':>11}{'recov.':>8}",
    ]
    for exp, setting, m, db, rec in table_rows(result):
        lines.append(f"{exp:<34}{setting[:65]:<66}{m:>10.4f}{_db(db):>11}{rec:>8}")
    v, c = mpc["view"], mpc["control"]
    lines += [
        "",
        f"{mpc['party']} received {v['received']} arrays ({v['bytes_received']} bytes) over "
        f"{mpc['transport']}; control: {c['setting']}: {_db(c['psnr'])}",
        "PSNR: median over the images; recov.: images at PSNR >= 30 dB.",
        f"{result['seconds']:.1f} s",
    ]
    return "\n".join(lines)


def html_sections(result: dict, png: bytes | None) -> list[tuple[str, str]]:
    """``(heading, HTML)`` sections of the report: the picture grid and the table."""
    from covault.jobs.report import figure_html

    e = html.escape
    body = "".join(
        f'<tr><td>{e(exp)}</td><td class="l">{e(s)}</td><td>{m:.4f}</td><td>{e(_db(db))}</td><td>{e(r)}</td></tr>'
        for exp, s, m, db, r in table_rows(result)
    )
    mpc, c = result["mpc"], result["mpc"]["control"]
    table = (
        '<table><tr><th>experiment</th><th class="l">setting</th><th>mean MSE</th><th>median PSNR</th>'
        f"<th>recovered</th></tr>{body}</table>"
        f'<p class="note">{e(result["dataset"])}; {e(result["model"])}. PSNR against the originals (peak 1); '
        "recovered: PSNR of at least 30 dB. The covault rows read every array compute party "
        f"{e(mpc['party'])} received ({mpc['view']['received']} arrays, {mpc['view']['bytes_received']} bytes "
        f"over {e(mpc['transport'])}), the arrays it sent, the openings and its shares; control: "
        f"{e(c['setting'])}: {e(_db(c['psnr']))}.</p>"
    )
    sections = []
    if png is not None:
        sections.append(("Originals and reconstructions", figure_html(png, "originals and reconstructions")))
    sections.append(("Reconstruction error per setting", table))
    return sections
