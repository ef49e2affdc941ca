"""Benchmark rows from job records: mean, per-seed values, 95 % t interval and the paired
difference against a baseline row; the results JSON and a Markdown table.

Results file format (docs/results/<benchmark>.json)::

    {"benchmark": str, "settings": {...}, "rows": [{"name": str, <metric>: mean, ...}]}

With seeds, a row also carries for each metric ``m``: ``m_seeds`` (values ordered by seed),
``m_ci95`` (``[low, high]``, two or more seeds) and, against the baseline row,
``m_diff = {"baseline": name, "mean": x, "ci95": [low, high]}`` paired by seed (only the
seeds both rows have; ``ci95`` is ``None`` with one common seed).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from numbers import Real
from typing import Any

from vislearn.bench.stats import mean_ci95, paired_diff
from vislearn.core.utils import write_json

__all__ = ["aggregate", "format_cell", "format_diff", "render_table", "write_results"]


def _lookup(rec: dict, key: str) -> Any:
    """``key`` in a record's metrics, then the record itself, its display fields, its config
    (dotted keys reach into nested dicts)."""
    for source in (rec.get("metrics", {}), rec, rec.get("display", {}), rec.get("config", {})):
        value: Any = source
        for part in key.split("."):
            if not isinstance(value, dict) or part not in value:
                break
            value = value[part]
        else:
            return value
    return None


def _num(v: Any) -> bool:
    return isinstance(v, Real) and not isinstance(v, bool)


def _round(v: float | None, ndigits: int) -> float | None:
    return None if v is None else round(float(v), ndigits)


def _round_ci(ci: list[float] | None, ndigits: int) -> list[float] | None:
    return None if ci is None else [round(float(x), ndigits) for x in ci]


def aggregate(
    results: Iterable[dict],
    metrics: Sequence[str],
    baseline: str | None = None,
    group_keys: Sequence[str] = ("name",),
    ndigits: int = 4,
) -> list[dict]:
    """One row per group of records (same values of ``group_keys``), in first-seen order.

    A row has the group keys, ``seeds`` and, for each of ``metrics`` the records have:
    the mean, ``m_seeds``, ``m_ci95`` (two or more seeds) and ``m_diff`` against the row named
    ``baseline`` with the same other group keys (paired by seed; not on the baseline row)."""
    groups: dict[tuple, list[dict]] = {}
    for rec in results:
        groups.setdefault(tuple(_lookup(rec, k) for k in group_keys), []).append(rec)
    by_seed: dict[tuple, dict[str, dict[int, float]]] = {}
    rows = []
    for gk, recs in groups.items():
        recs = sorted(recs, key=lambda r: r["seed"])
        row: dict = dict(zip(group_keys, gk, strict=True))
        row["seeds"] = [r["seed"] for r in recs]
        values: dict[str, dict[int, float]] = {}
        for m in metrics:
            vals = {r["seed"]: _lookup(r, m) for r in recs}
            vals = {s: float(v) for s, v in vals.items() if _num(v)}
            if not vals:
                continue
            values[m] = vals
            mean, ci = mean_ci95(list(vals.values()))
            row[m] = _round(mean, ndigits)
            row[f"{m}_seeds"] = [_round(v, ndigits) for v in vals.values()]
            if ci is not None:
                row[f"{m}_ci95"] = _round_ci(ci, ndigits)
        by_seed[gk] = values
        rows.append(row)
    if baseline is not None and "name" in group_keys:
        at = list(group_keys).index("name")
        for gk, row in zip(groups, rows, strict=True):
            base_gk = gk[:at] + (baseline,) + gk[at + 1 :]
            if gk == base_gk or base_gk not in by_seed:
                continue
            for m, vals in by_seed[gk].items():
                base = by_seed[base_gk].get(m, {})
                if set(vals) & set(base):
                    d = rounded_paired_diff(vals, base, ndigits)
                    row[f"{m}_diff"] = {"baseline": baseline, "mean": d["mean"], "ci95": d["ci95"]}
    return rows


def rounded_paired_diff(a: dict[int, float], b: dict[int, float], ndigits: int = 4) -> dict:
    """:func:`~vislearn.bench.stats.paired_diff` of two ``{seed: value}`` mappings, its mean
    and interval rounded to ``ndigits``: ``{"mean", "ci95", "n"}`` (``ci95`` None with one
    pair), the form results files store."""
    d = paired_diff(a, b)
    return {"mean": _round(d["mean"], ndigits), "ci95": _round_ci(d["ci95"], ndigits), "n": d["n"]}


def run_seconds(records: Iterable[dict]) -> float:
    """The summed own wall clock (``metrics["wall_seconds"]``) of the runs in ``records``:
    a benchmark's cost, the same whether its runs came from the cache or ran just now (unlike
    the wall clock of one invocation, a few seconds for a report-only pass)."""
    return round(sum(float(r["metrics"].get("wall_seconds") or 0.0) for r in records), 1)


def write_results(
    path: str | os.PathLike, benchmark: str, settings: dict, rows: list[dict]
) -> dict:
    """Write ``{"benchmark", "settings", "rows"}`` to ``path`` atomically; return it."""
    data = {"benchmark": benchmark, "settings": settings, "rows": rows}
    write_json(path, data)
    return data


def _fmt(v: float, signed: bool = False) -> str:
    sign = "+" if signed else ""
    if isinstance(v, int) and not signed:
        return str(v)
    return f"{v:{sign}.2f}" if abs(v) < 10 else f"{v:{sign}.1f}"


def format_cell(row: dict, key: str) -> str:
    """``mean [low, high]`` (or just the value without an interval; ``–`` when missing)."""
    value: Any = row
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return "–"
        value = value[part]
    if not _num(value):
        return "–" if value is None else str(value)
    text = _fmt(value)
    ci = row.get(f"{key}_ci95")
    if ci:
        text += f" [{_fmt(ci[0])}, {_fmt(ci[1])}]"
    return text


def format_diff(row: dict, key: str, suffix: str = "_diff") -> str:
    """The paired difference ``row[key + suffix]`` as ``+x [low, high]``; bold with ▲/▼ when
    the interval excludes zero (a win or a loss against the baseline), ``–`` when there is
    none. ``suffix`` picks another difference of the row (e.g. ``_diff_matched``)."""
    d = row.get(f"{key}{suffix}")
    if not d:
        return "–"
    text = _fmt(d["mean"], signed=True)
    ci = d.get("ci95")
    if not ci:
        return text + " (1 seed)"
    text += f" [{_fmt(ci[0], signed=True)}, {_fmt(ci[1], signed=True)}]"
    if ci[0] > 0 or ci[1] < 0:
        text = f"**{text}** {'▲' if ci[0] > 0 else '▼'}"
    return text


def render_table(
    rows: list[dict], metrics: Sequence[str | tuple[str, str]], diffs: bool = True
) -> str:
    """A Markdown table: one line per row, per metric ``mean [low, high]`` and, when any row
    has one, a ``Δ vs <baseline>`` column with the paired difference (bold ▲/▼: the 95 %
    interval excludes zero)."""
    cols: list[tuple[str, str, bool]] = []
    for m in metrics:
        title, key = (m, m) if isinstance(m, str) else m
        cols.append((title, key, False))
        base = next((r[f"{key}_diff"]["baseline"] for r in rows if r.get(f"{key}_diff")), None)
        if diffs and base is not None:
            cols.append((f"Δ {title} vs `{base}`", key, True))
    lines = ["| name | " + " | ".join(c[0] for c in cols) + " |", "|---|" + "---:|" * len(cols)]
    for r in rows:
        cells = [format_diff(r, k) if d else format_cell(r, k) for _, k, d in cols]
        lines.append(f"| `{r['name']}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)
