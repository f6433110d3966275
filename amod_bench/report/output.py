"""Atomic, deterministic file output for the report: CSV + markdown tables, PNG + PDF figures.

Every file is written to a temporary name in its final folder and renamed into
place (os.replace is atomic on POSIX), so an interrupted report leaves either
the previous file or the new one, never half a table. Nothing written here
carries a timestamp: PDFs are saved without CreationDate, PNGs without the
Software tag, and CSVs/markdown are pure functions of the frames.
"""
from __future__ import annotations

import io
import math
from pathlib import Path

import pandas as pd

from amod_bench.results import write_bytes_atomic as atomic_write_bytes
from amod_bench.results import write_text_atomic as atomic_write_text


def format_value(value, spec: str = ".4g") -> str:
    """Markdown cell text: +inf is "not reached", NaN/None is "-", floats use `spec`."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if math.isinf(value):
            return "not reached" if value > 0 else "-inf"
        return format(value, spec)
    text = str(value)
    return "-" if text in ("", "nan", "None") else text.replace("|", "\\|").replace("\n", " ")


def markdown_table(df: pd.DataFrame, formats: dict[str, str] | None = None, default: str = ".4g") -> str:
    """A GitHub-flavoured markdown table of `df` (no index); `formats` maps column -> format spec."""
    formats = formats or {}
    if df.empty:
        return "_(no rows)_\n"
    header = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    body = []
    for row in df.itertuples(index=False):
        body.append("| " + " | ".join(format_value(v if not hasattr(v, "item") else v.item(), formats.get(c, default))
                                        for c, v in zip(df.columns, row)) + " |")
    return "\n".join([header, rule, *body]) + "\n"


def write_csv(df: pd.DataFrame, folder: Path, name: str) -> Path:
    """`<name>.csv`: every column at full precision (inf as "inf", NaN empty)."""
    buf = io.StringIO()
    df.to_csv(buf, index=False, lineterminator="\n")
    return atomic_write_text(Path(folder) / f"{name}.csv", buf.getvalue())


def write_markdown(df: pd.DataFrame, folder: Path, name: str, formats: dict[str, str] | None = None) -> str:
    """`<name>.md`: `df` as a formatted markdown table; returns the markdown."""
    md = markdown_table(df, formats)
    atomic_write_text(Path(folder) / f"{name}.md", md)
    return md


def save_figure(fig, folder: Path, name: str, dpi: int = 100) -> list[Path]:
    """`<name>.png` and `<name>.pdf`, each written atomically and without timestamps."""
    paths = []
    for fmt, metadata in (("png", {"Software": None}), ("pdf", {"CreationDate": None, "Producer": None})):
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=dpi, metadata=metadata)  # figures lay themselves out: no tight bbox
        paths.append(atomic_write_bytes(Path(folder) / f"{name}.{fmt}", buf.getvalue()))
    return paths
