"""Render docs/results/<benchmark>.json as a Markdown table into docs/RESULTS.md, between
``<!-- <benchmark>:start -->`` and ``<!-- <benchmark>:end -->`` markers.

    python benchmarks/render_results.py fmnist_ssl

A value with a 95 % interval (``<key>_ci95``, written by :func:`vislearn.bench.aggregate`)
shows as ``mean [low, high]``; a column whose rows carry a paired difference against a
baseline (``<key>_diff``) gets a ``Δ ... vs <baseline>`` column next to it, bold with ▲/▼ when
the difference's interval excludes zero (:func:`vislearn.bench.report.format_diff`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from vislearn.bench.report import format_cell, format_diff

ROOT = Path(__file__).resolve().parents[1]

# (column title, row key, per-seed key shown when the row has no interval, or None)
COLUMNS = {
    "fmnist_ssl": [
        ("kNN top-1 %", "knn_top1", "knn_top1_per_seed"),
        ("linear top-1 %", "linear_top1", "linear_top1_per_seed"),
        ("images/s", "images_per_s", None),
        ("speed vs lightly", "speed_ratio_vs_lightly", None),
    ],
    "fmnist_csml_kscl": [
        ("kNN top-1 %", "knn_top1", "knn_top1_per_seed"),
        ("linear top-1 %", "linear_top1", "linear_top1_per_seed"),
        ("kNN Δ vs matched control", "knn_top1_diff_matched", None),
        ("linear Δ vs matched control", "linear_top1_diff_matched", None),
        ("images/s", "images_per_s", None),
        ("step cost vs MoCo v2", "step_cost_vs_moco_v2", None),
    ],
    "fmnist_semi": [
        ("test top-1 %", "top1", "top1_per_seed"),
        ("validation top-1 %", "val_top1", None),
        ("picked lr", "lr", None),
        ("EMA teacher top-1 %", "ema_top1", None),
        ("final mask rate", "last_mask_rate", None),
    ],
    "fmnist_bingo_sage": [
        ("kNN top-1 %", "knn_top1", "knn_top1_per_seed"),
        ("linear top-1 %", "linear_top1", "linear_top1_per_seed"),
        ("epochs", "epochs", None),
        ("bag purity", "bag_purity", None),
    ],
    "fmnist_mra": [
        ("clean top-1 %", "top1", "top1_per_seed"),
        ("occluded top-1 %", "occluded_top1", None),
        ("images/s", "images_per_s", None),
    ],
    "photo_mra": [
        ("clean top-1 %", "top1", None),
        ("occluded top-1 %", "occluded_top1", None),
        ("validation top-1 %", "val_top1", None),
        ("object share kept", "fg_kept", None),
    ],
    "video_fame": [
        ("unbiased probe top-1 %", "unbiased_probe_top1", None),
        ("background var. share %", "background_var_share", None),
        ("biased probe top-1 %", "biased_probe_top1", None),
        ("motion var. share %", "motion_var_share", None),
        ("photo probe top-1 %", "background_probe_top1", None),
    ],
    "vos_uvos": [
        ("J&F % [95 % CI over videos]", "jf", "jf_per_seed"),
        ("J %", "j", None),
        ("F %", "f", None),
        ("clusters / video", "clusters_per_video", None),
        ("s / video", "seconds_per_video", None),
    ],
    "dit_cache": [
        ("speed-up (wall, 2 threads)", "speedup_wall", None),
        ("… 1 thread", "speedup_wall_by_threads.1", None),
        ("FLOPs ratio", "flops_ratio", None),
        ("FD", "fd", None),
        ("FD / uncached", "fd_ratio_vs_none", None),
        ("class consistency", "class_consistency", None),
        ("PSNR dB", "psnr", None),
    ],
}


# benchmarks with a second table: the rows whose name starts with the prefix, own columns
SPLITS = {
    "fmnist_semi": ("fewshot/", [
        ("prototype top-1 %", "prototype_top1", None),
        ("logistic top-1 %", "logistic_top1", None),
    ]),
}  # fmt: skip
# the columns that get a paired-difference column (default: every column whose rows have one)
DIFFS = {"fmnist_semi": ("top1",)}

# benchmarks whose rows are one (name, setting) pair each: one table row per name, one column
# per setting, one table per value of the group key (None: one table) -- (value key, setting
# keys, column title format, group key)
PIVOTS = {
    "seg_mdp": ("miou", ("target",), "{target}", "protocol"),
}


def _cell(row: dict, key: str, per_seed: str | None) -> str:
    if key.endswith("_diff_matched"):  # a paired difference against another control
        return format_diff(row, key.removesuffix("_diff_matched"), suffix="_diff_matched")
    value = row
    for part in key.split("."):  # "per_frame.JF_mean": a nested entry
        if not isinstance(value, dict) or part not in value:
            return "–"
        value = value[part]
    if isinstance(row.get(f"{key}_ci95"), list):
        return format_cell(row, key)
    if isinstance(value, int):
        text = str(value)
    elif key == "lr":  # a learning rate: every significant digit (0.015, not 0.01)
        text = f"{value:g}"
    else:
        text = f"{value:.2f}" if value < 10 else f"{value:.1f}"
    if per_seed and len(row.get(per_seed, [])) > 1:
        text += " (" + " / ".join(f"{v:.1f}" for v in row[per_seed]) + ")"
    return text


def render_pivot(name: str, rows: list[dict]) -> str:
    value, keys, title, group = PIVOTS[name]
    if group is not None:
        parts = {}
        for r in rows:
            parts.setdefault(r[group], []).append(r)
        return "\n\n".join(
            f"**{group} = `{g}`**\n\n" + _pivot_table(part, value, keys, title)
            for g, part in parts.items()
        )
    return _pivot_table(rows, value, keys, title)


def _pivot_table(rows: list[dict], value: str, keys: tuple, title: str) -> str:
    settings = list(dict.fromkeys(tuple(r[k] for k in keys) for r in rows))
    cells = {(r["name"], tuple(r[k] for k in keys)): r for r in rows}
    heads = [title.format(**dict(zip(keys, s, strict=True))) for s in settings]
    lines = ["| name | " + " | ".join(heads) + " |", "|---|" + "---:|" * len(heads)]
    for n in dict.fromkeys(r["name"] for r in rows):
        row = [_cell(cells[(n, s)], value, None) if (n, s) in cells else "–" for s in settings]
        lines.append(f"| `{n}` | " + " | ".join(row) + " |")
    return "\n".join(lines)


def render(name: str) -> str:
    data = json.loads((ROOT / "docs" / "results" / f"{name}.json").read_text())
    if name in PIVOTS:
        return render_pivot(name, data["rows"])
    rows, diffs = data["rows"], DIFFS.get(name)
    if name not in SPLITS:
        return render_rows(rows, COLUMNS[name], diffs)
    prefix, columns = SPLITS[name]
    main = [r for r in rows if not r["name"].startswith(prefix)]
    other = [r for r in rows if r["name"].startswith(prefix)]
    return render_rows(main, COLUMNS[name], diffs) + "\n\n" + render_rows(other, columns, diffs)


def render_rows(
    rows: list[dict], columns: list[tuple[str, str, str | None]], diffs: tuple | None = None
) -> str:
    """One table row per result row; a ``Δ`` column after each column with paired diffs (only
    the columns named in ``diffs``, when given)."""
    cols = []
    for title, key, per_seed in columns:
        cols.append((title, lambda r, k=key, s=per_seed: _cell(r, k, s)))
        bases = list(
            dict.fromkeys(r[f"{key}_diff"]["baseline"] for r in rows if r.get(f"{key}_diff"))
        )
        # several baselines (e.g. one per label fraction): each row against its own
        if bases and (diffs is None or key in diffs):
            title = "Δ vs " + " / ".join(f"`{b}`" for b in bases)
            cols.append((title, lambda r, k=key: format_diff(r, k)))
    lines = ["| name | " + " | ".join(c[0] for c in cols) + " |", "|---|" + "---:|" * len(cols)]
    for row in rows:
        lines.append(f"| `{row['name']}` | " + " | ".join(c[1](row) for c in cols) + " |")
    return "\n".join(lines)


def main() -> None:
    doc = ROOT / "docs" / "RESULTS.md"
    text = doc.read_text()
    for name in sys.argv[1:]:
        start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
        if start not in text or end not in text:
            raise SystemExit(f"docs/RESULTS.md has no {start} ... {end} markers")
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        text = f"{head}{start}\n{render(name)}\n{end}{tail}"
    doc.write_text(text)


if __name__ == "__main__":
    main()
