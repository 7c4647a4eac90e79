"""The paper's tables (Markdown and CSV) from the evaluation's results, with the paper's own rows beside ours.

Split from :mod:`emotalk.eval.evaluate` (which re-exports :func:`build_tables`) so that module stays about
generating and scoring; this one only formats numbers that are already computed.
"""
from __future__ import annotations

import csv
import io
import math
from typing import TYPE_CHECKING, Any

from emotalk.errors import ConfigError
from emotalk.eval import paper_tables
from emotalk.eval.protocol import card_markdown

if TYPE_CHECKING:  # annotations only: evaluate imports this module
    from emotalk.eval.evaluate import EvalConfig, EvalMethod

#: columns of our own with no paper counterpart, appended to Tables 2 and 4 when computed (issue 12: is the
#: asked-for emotion visible in the pixels?)
#: the field's MEAD metrics with no column in the paper's tables (appended to Tables 2 and 4 when computed)
FIELD_COLUMNS = ("Acc_emo (FAN)",)
EXPRESSION_COLUMNS = ("ExT-brows", "ExT-eyes", "ExT-mouth", "Sep", "Int-mono", "Blink-ap", "Blink-px",
                      "Mouth-PSNR", "Emo-Acc-LM")


def _fmt(v: Any) -> str:
    if isinstance(v, float) and v == math.inf:
        return "∞"  # e.g. PSNR of identical frames (the ground-truth row)
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _table(rows: list[tuple[str, dict[str, float]]], columns: list[str]) -> tuple[str, str]:
    md = ["| Method | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["method", *columns])
    for name, vals in rows:
        md.append(f"| {name} | " + " | ".join(_fmt(vals.get(c)) for c in columns) + " |")
        w.writerow([name, *[("" if vals.get(c) is None else vals.get(c)) for c in columns]])
    return "\n".join(md) + "\n", buf.getvalue()


def build_tables(cfg: EvalConfig, results: dict[str, dict[str, float]], methods: list[EvalMethod],
                 card: dict | None = None) -> dict[str, tuple[str, str]]:
    """``{table: (markdown, csv)}`` from ``{method name: {metric display: value}}``; ``card`` (the protocol
    card) heads every Markdown table and, when it records seen subjects, every CSV too."""
    out = {}
    ours_cols = []
    for vals in results.values():
        ours_cols += [c for c in vals if c not in ours_cols]
    pt = paper_tables
    specs = {
        "table2": ("Table 2: all metrics", list(pt.TABLE2_COLUMNS),
                   [(f"{k} (paper)" if "paper" not in k else k, pt.paper_row("table2", k, cfg.data.dataset_name))
                    for k in pt.TABLE2.get(cfg.data.dataset_name, {})]),
        "table3": ("Table 3: G_L ablations", list(pt.TABLE3_COLUMNS), []),
        "table4": ("Table 4: G_T ablations", list(pt.TABLE4_COLUMNS), []),
        "table5": ("Table 5: neutral emotion only", list(pt.TABLE5_COLUMNS),
                   [(f"{k} (paper)" if "paper" not in k else k, pt.paper_row("table5", k)) for k in pt.TABLE5]),
    }
    for table, (title, paper_cols, paper_rows) in specs.items():
        members = [m for m in methods if table in m.tables and m.name in results]
        if not members:
            continue
        # our columns: the paper's where we computed the same metric, then our offline stand-ins
        cols = [c for c in paper_cols if c in ours_cols]
        stand_in = {"FID": "FID-dlib", "CSIM": "CSIM-dlib", "LSE-C": "AV-sync-conf", "Emo-Acc": "Emo-Acc-FER"}
        for c in paper_cols:
            alt = stand_in.get(c)
            if alt and alt in ours_cols and alt not in cols and (table != "table3"):
                cols.append(alt)
        if table in ("table3", "table4"):
            cols = [c for c in cols if c in paper_cols or c in stand_in.values()]
        if table in ("table2", "table4"):
            cols += [c for c in FIELD_COLUMNS + EXPRESSION_COLUMNS if c in ours_cols]
        rows = [(m.name, results[m.name]) for m in members]
        for m in members:
            if m.paper_row and table in ("table3", "table4"):
                src = pt.TABLE3 if table == "table3" else pt.TABLE4
                if m.paper_row not in src:
                    raise ConfigError(f"methods[{m.name}].paper_row {m.paper_row!r} is not a row of the "
                                      f"paper's {table}: {list(src)}")
                rows.append((f"{m.paper_row} (paper)", pt.paper_row(table, m.paper_row)))
        rows += paper_rows
        all_cols = cols + [c for c in paper_cols if c not in cols]
        md, csv_text = _table(rows, all_cols)
        note = ("\nColumns named like the paper's are the same metrics; FID-dlib, CSIM-dlib, AV-sync-conf and "
                "Emo-Acc-FER (fer's FER-2013 classifier) are "
                "offline stand-ins with no paper value. '—': not computed / not reported.\n")
        if any(c in EXPRESSION_COLUMNS for c in cols):
            note += ("Ours, no paper value: ExT-* = share of the asked brow / eye / mouth displacement that shows "
                     "in landmarks re-detected on the frames (1 = all, the warp renderer is the practical "
                     "ceiling); Sep = distance of the top-intensity emotions' renderings from the neutral one "
                     "(eye distances); Int-mono = share of emotions whose separation grows with the intensity; "
                     "Blink-ap = re-detected eye aperture at an inserted blink over the open eye (lower = "
                     "visible; dlib misses real blinks); Blink-px = how open the eyes look at the blink, from "
                     "the pixels (0 = closed to a line; real blinks read 0.15-0.31); Mouth-PSNR = PSNR inside the "
                     "real frames' inner-lip polygon on open-mouth frames (dark cavity, teeth); Emo-Acc-LM = "
                     "emotion accuracy (%) of a classifier on landmark geometry (the ground-truth row is its "
                     "ceiling).\n")
        head = card_markdown(card) if card else ""
        if card and card.get("seen_subjects"):
            title += " [SEEN SUBJECTS]"
            csv_text = "# SEEN SUBJECTS: includes subjects the models trained on (allow_seen_subjects)\n" + csv_text
        out[table] = (f"## {title}\n\n" + head + md + note, csv_text)
    return out
