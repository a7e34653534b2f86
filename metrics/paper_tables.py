"""The paper's Tables 1-7 ("Narrating For You"), transcribed, and their Markdown/LaTeX layout.

Column keys are the metric keys of :mod:`metrics.suite` (``fid``, ``lse_c`` ...), so that our
numbers can be placed in a row beside the paper's. Notes on the transcription:

* Tables 1 and 3 have one block per test set (VoxCeleb, FakeAVCeleb, CelebV-HQ, HDTF);
  Tables 2, 4 and 5 name no test set.
* ``mos_video``/``mos_audio`` are ratings by 35 human experts (0-5), not a computed metric.
* The paper's "MCD" (44-140) is a plain Euclidean MFCC distance, our ``mcd_paper``
  (:class:`metrics.mcd.PaperMFCCDistance`); standard MCD is ``mcd``.
* Table 6: the text copy lost the positions of its check marks; the component sets below are
  read from the counts of marks per row and Section 4.2's discussion (removing TE hurts most,
  removing DC more than removing EC, ETE beats STE). The numbers are exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

DATASETS = ("VoxCeleb", "FakeAVCeleb", "CelebV-HQ", "HDTF")


@dataclass(frozen=True)
class Column:
    """One metric column: suite key, printed label and direction."""

    key: str
    label: str
    higher_is_better: bool


@dataclass(frozen=True)
class PaperTable:
    """One table of the paper.

    Attributes:
        number: table number in the paper.
        title: what the table reports.
        columns: metric columns, in the paper's order.
        rows: ``(dataset or "", model, values)``; values in column order.
        extra_columns: columns only our row fills (e.g. DNSMOS), printed as "-" for the paper.
    """

    number: int
    title: str
    columns: tuple[Column, ...]
    rows: tuple[tuple[str, str, tuple[float, ...]], ...]
    extra_columns: tuple[Column, ...] = field(default=())

    def block(self, dataset: str | None) -> list[tuple[str, str, tuple[float, ...]]]:
        """Rows of one test set (all rows when the table has no per-dataset blocks)."""
        if not any(row[0] for row in self.rows) or dataset is None:
            return list(self.rows)
        if dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")
        return [row for row in self.rows if row[0] == dataset]


def _c(key: str, label: str, up: bool) -> Column:
    return Column(key, label, up)


FID, FVD, FVMD = _c("fid", "FID", False), _c("fvd", "FVD", False), _c("fvmd", "FVMD", False)
FAD, MCD, STOI = _c("fad", "FAD", False), _c("mcd_paper", "MCD", False), _c("stoi", "STOI", True)


def _blocks(models: tuple[str, ...], values: dict[str, tuple[tuple[float, ...], ...]]):
    return tuple((ds, m, v) for ds in DATASETS for m, v in zip(models, values[ds]))


_VIDEO_MODELS = ("Audio2Head", "Hallo", "EAT", "SadTalker", "Our Model")
_AUDIO_MODELS = ("Tortoise", "Your_TTS", "XTTS_v2", "GlowTTS", "Our Model")

TABLE1 = PaperTable(1, "Video generation: FID, FVD, FVMD per test set", (FID, FVD, FVMD), _blocks(_VIDEO_MODELS, {
    "VoxCeleb": ((81.00, 90.12, 5100.92), (67.28, 70.69, 5703.44), (85.16, 80.38, 4878.36),
                 (119.36, 112.77, 6352.19), (42.88, 49.78, 4192.07)),
    "FakeAVCeleb": ((93.59, 97.85, 1329.23), (26.88, 39.42, 2351.20), (94.34, 98.49, 1324.91),
                    (81.77, 77.10, 4158.18), (47.24, 49.15, 2263.54)),
    "CelebV-HQ": ((90.22, 102.76, 2939.49), (42.76, 56.10, 2816.68), (47.88, 56.21, 2894.31),
                  (52.60, 52.55, 2789.19), (34.01, 43.67, 2743.29)),
    "HDTF": ((37.78, 32.69, 2633.04), (20.54, 25.81, 1290.57), (29.57, 29.34, 2573.05),
             (22.34, 23.57, 2410.89), (11.72, 15.58, 1784.16)),
}))

TABLE2 = PaperTable(
    2, "Video generation: PSNR, SSIM, KVD, LPIPS, MOS",
    (_c("psnr", "PSNR", True), _c("ssim", "SSIM", True), _c("kvd", "KVD", False), _c("lpips", "LPIPS", False),
     _c("mos_video", "MOS", True)),
    (("", "Hallo", (33.01, 0.68, 44.12, 0.51, 4.10)), ("", "Audio2Head", (29.21, 0.51, 49.09, 0.23, 3.51)),
     ("", "EAT", (24.45, 0.52, 49.12, 0.52, 3.57)), ("", "SadTalker", (29.72, 0.59, 49.61, 0.53, 3.51)),
     ("", "Proposed", (35.94, 0.73, 41.22, 0.54, 4.22))),
)

TABLE3 = PaperTable(3, "Speech generation: FAD, MCD, STOI per test set", (FAD, MCD, STOI), _blocks(_AUDIO_MODELS, {
    "VoxCeleb": ((258.54, 82.37, 0.10), (199.52, 111.79, 0.19), (249.17, 100.80, 0.13), (329.21, 103.94, 0.15),
                 (241.75, 75.39, 0.17)),
    "FakeAVCeleb": ((871.14, 82.12, 0.10), (445.38, 65.60, 0.21), (184.39, 77.88, 0.11), (482.04, 87.11, 0.18),
                    (171.52, 55.12, 0.19)),
    "CelebV-HQ": ((529.06, 113.18, 0.09), (520.01, 137.58, 0.16), (509.90, 124.61, 0.07), (549.18, 139.81, 0.22),
                  (244.83, 85.76, 0.18)),
    "HDTF": ((425.30, 67.15, 0.11), (467.42, 49.38, 0.15), (135.11, 49.65, 0.14), (510.61, 66.42, 0.12),
             (106.43, 44.05, 0.15)),
}))

TABLE4 = PaperTable(
    4, "Speech generation: ESTOI, PESQ, WER, MOS",
    (_c("estoi", "ESTOI", True), _c("pesq", "PESQ", True), _c("wer", "WER", False), _c("mos_audio", "MOS", True)),
    (("", "Tortoise", (0.42, 3.80, 0.21, 4.32)), ("", "Your_TTS", (0.31, 3.71, 0.30, 3.61)),
     ("", "XTTS_v2", (0.33, 3.51, 0.34, 3.21)), ("", "GlowTTS", (0.39, 3.83, 0.33, 3.52)),
     ("", "Proposed", (0.43, 4.01, 0.18, 4.56))),
    extra_columns=(_c("dnsmos", "DNSMOS (ovr)", True),),
)

TABLE5 = PaperTable(
    5, "Audio-video synchronisation: LSE-C, LSE-D",
    (_c("lse_c", "LSE-C", True), _c("lse_d", "LSE-D", False)),
    (("", "Groundtruth", (5.45, 8.52)), ("", "Hallo", (3.03, 8.71)), ("", "Audio2Head", (2.51, 10.34)),
     ("", "EAT", (4.39, 9.35)), ("", "SadTalker", (5.44, 10.09)), ("", "STE", (5.71, 8.41)),
     ("", "ETE/Proposed", (5.74, 8.38))),
)

_ABLATION_COLUMNS = (FID, FVD, FVMD, FAD, MCD, STOI)

TABLE6 = PaperTable(6, "Ablation of the components (TE variants, DC, EC)", _ABLATION_COLUMNS, (
    ("", "DC + EC (no TE)", (86.70, 80.88, 5275.89, 328.27, 95.44, 0.07)),
    ("", "ETE only", (68.83, 74.19, 4412.74, 260.91, 87.51, 0.11)),
    ("", "ETE + DC", (63.68, 71.38, 4298.30, 250.12, 83.96, 0.14)),
    ("", "STE + DC + EC", (61.44, 69.15, 2720.41, 241.77, 81.60, 0.17)),
    ("", "ETE + DC + EC", (42.88, 49.78, 4192.07, 241.75, 75.39, 0.17)),
))

TABLE7 = PaperTable(7, "Ablation of the encoders", _ABLATION_COLUMNS, (
    ("", "Only Visual Tokens Attended", (68.31, 78.42, 5747.04, 304.98, 81.17, 0.13)),
    ("", "Only Audio Tokens Attended", (69.02, 79.35, 6576.85, 301.49, 80.65, 0.13)),
    ("", "No audio sequence encoding", (85.25, 94.28, 7483.40, 498.33, 87.51, 0.09)),
    ("", "No audio profile encoding", (70.10, 80.96, 5926.64, 309.95, 89.58, 0.11)),
    ("", "No visual token encoding", (54.38, 62.02, 5481.36, 221.07, 63.25, 0.12)),
    ("", "Proposed Model", (42.88, 49.78, 4192.07, 241.75, 75.39, 0.17)),
))

TABLES: dict[int, PaperTable] = {t.number: t for t in (TABLE1, TABLE2, TABLE3, TABLE4, TABLE5, TABLE6, TABLE7)}
RESULT_TABLES = (1, 2, 3, 4, 5)
"""The tables the evaluate CLI fills with our row (6 and 7 are ablations: one run per variant)."""


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


def _fmt(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:.2f}" if abs(value) >= 0.01 or value == 0 else f"{value:.3g}"


def table_rows(
    table: PaperTable, ours: dict[str, float] | None, name: str, dataset: str | None
) -> tuple[list[str], list[list[str]]]:
    """Header and rows (the paper's block, then ours) as strings."""
    columns = table.columns + table.extra_columns
    arrows = [f"{c.label} ({'higher' if c.higher_is_better else 'lower'} better)" for c in columns]
    header = ["Dataset", "Model", *arrows] if any(r[0] for r in table.rows) else ["Model", *arrows]
    rows = []
    for ds, model, values in table.block(dataset):
        cells = [_fmt(v) for v in values] + ["-"] * len(table.extra_columns)
        rows.append(([ds] if len(header) > len(columns) + 1 else []) + [model, *cells])
    if ours is not None:
        cells = [_fmt(ours.get(c.key)) for c in columns]
        rows.append(([dataset or ""] if len(header) > len(columns) + 1 else []) + [f"{name} (ours)", *cells])
    return header, rows


def render_markdown(table: PaperTable, ours: dict[str, float] | None, name: str, dataset: str | None = None) -> str:
    """Table ``table`` in Markdown, the paper's rows then ``ours`` (missing values as "-")."""
    header, rows = table_rows(table, ours, name, dataset)
    lines = [f"**Table {table.number}.** {table.title}" + (f" ({dataset})" if dataset else ""), ""]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _tex(text: str) -> str:
    return text.replace("_", r"\_").replace("&", r"\&").replace("%", r"\%")


def render_latex(table: PaperTable, ours: dict[str, float] | None, name: str, dataset: str | None = None) -> str:
    """Table ``table`` as a LaTeX ``tabular`` (booktabs), the paper's rows then ``ours``."""
    header, rows = table_rows(table, ours, name, dataset)
    header = [h.replace(" (higher better)", r" $\uparrow$").replace(" (lower better)", r" $\downarrow$") for h in header]
    caption = f"Table {table.number}: {table.title}" + (f" ({dataset})" if dataset else "")
    lines = [
        r"\begin{table}[t]", r"\centering", rf"\caption{{{_tex(caption)}}}",
        r"\begin{tabular}{l" + "l" * (len(header) - len(table.columns) - len(table.extra_columns) - 1)
        + "r" * (len(table.columns) + len(table.extra_columns)) + "}",
        r"\toprule", " & ".join(_tex(h) if "$" not in h else h for h in header) + r" \\", r"\midrule",
    ]
    for i, row in enumerate(rows):
        if ours is not None and i == len(rows) - 1:
            lines.append(r"\midrule")
        lines.append(" & ".join(_tex(cell) for cell in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"
