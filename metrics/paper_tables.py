"""The paper's Tables 1-7 ("Narrating For You"), transcribed, and their Markdown/LaTeX layout.

Column keys are the metric keys of :mod:`metrics.suite` (``fid``, ``lse_c`` ...), so that our
numbers can be placed in a row beside the paper's. Notes on the transcription:

* Tables 1 and 3 have one block per test set (VoxCeleb, FakeAVCeleb, CelebV-HQ, HDTF);
  Tables 2, 4 and 5 name no test set.
* ``mos_video``/``mos_audio`` are ratings by 35 human experts (0-5), not a computed metric.
* The paper's "MCD" (44-140) is a plain Euclidean MFCC distance, our ``mcd_paper``
  (:class:`metrics.mcd.PaperMFCCDistance`), printed as "MFCC dist. (paper's MCD)"; the
  standard MCD in dB (``mcd``) is an extra column of Table 3 that only our row fills.

Rendering (:func:`render_markdown`, :func:`render_latex`, both from one :func:`layout`): headers
carry units and an arrow for the direction; every "-" carries a footnote number whose note
gives the reason (not in the paper, missing weights or package, ``--ratings`` not given...);
notes under each table say how many clips our row covers (the paper does not say for its
rows), which test set the rows are on, and what each unusual column holds.
* Table 6: the text copy lost the positions of its check marks; the component sets below are
  read from the counts of marks per row and Section 4.2's discussion (removing TE hurts most,
  removing DC more than removing EC, ETE beats STE). The numbers are exact.
* Tables 6 and 7 repeat the proposed model's VoxCeleb numbers of Tables 1 and 3: the ablations
  were scored on VoxCeleb. :data:`ABLATION_CONFIGS` names the config of ``experiments/configs``
  behind each of their rows.

Several rows of ours (one per checkpoint, dataset or baseline folder) go into one table through
:func:`layout`'s sequence form: Tables 1 and 3 then show one block per test set (``blocks``),
the paper's rows first and ours below them, each block with its own rows of ours; a row whose
run is missing (no checkpoint, no test split) is an :class:`OurRow` with ``missing`` set, so that
every "-" of it names that reason. :func:`render_csv` gives the same cells as CSV records.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

DATASETS = ("VoxCeleb", "FakeAVCeleb", "CelebV-HQ", "HDTF")


@dataclass(frozen=True)
class Column:
    """One metric column: suite key, printed label, direction, unit and what it is.

    Attributes:
        key: result key of :mod:`metrics.suite` (or ``mos_video``/``mos_audio``).
        label: printed label.
        higher_is_better: direction (an arrow in the header).
        unit: unit or scale printed after the label (``"dB"``, ``"0-5"``), or ``""``.
        note: what the column holds, printed under every table that has it, or ``""``.
    """

    key: str
    label: str
    higher_is_better: bool
    unit: str = ""
    note: str = ""

    @property
    def heading(self) -> str:
        """Label and unit, without the arrow: ``"PSNR (dB)"``."""
        return f"{self.label} ({self.unit})" if self.unit else self.label


@dataclass(frozen=True)
class PaperTable:
    """One table of the paper.

    Attributes:
        number: table number in the paper.
        title: what the table reports.
        columns: metric columns, in the paper's order.
        rows: ``(dataset or "", model, values)``; values in column order.
        extra_columns: columns only our row fills (e.g. DNSMOS), "-" for the paper's rows.
    """

    number: int
    title: str
    columns: tuple[Column, ...]
    rows: tuple[tuple[str, str, tuple[float, ...]], ...]
    extra_columns: tuple[Column, ...] = field(default=())

    @property
    def has_blocks(self) -> bool:
        """True when the paper's rows are grouped by test set (Tables 1 and 3)."""
        return any(row[0] for row in self.rows)

    def block(self, dataset: str | None) -> list[tuple[str, str, tuple[float, ...]]]:
        """Rows of one test set (all rows when the table has no per-dataset blocks)."""
        if not self.has_blocks or dataset is None:
            return list(self.rows)
        if dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")
        return [row for row in self.rows if row[0] == dataset]


def _c(key: str, label: str, up: bool, unit: str = "", note: str = "") -> Column:
    return Column(key, label, up, unit, note)


_MFCC_NOTE = (
    "MFCC dist. is the column the paper calls MCD (44-140 there): a Euclidean distance between MFCCs of "
    "dB mel spectra (ours: metrics.mcd.PaperMFCCDistance), not the standard mel-cepstral distortion."
)
_MCD_NOTE = (
    "MCD (dB) is the standard mel-cepstral distortion in dB (Kubichek; c0 excluded, DTW-aligned frames; "
    "typically 4-10 dB), which the paper does not report."
)
_MOS_NOTE = "MOS: human ratings on a 0-5 scale (the paper: 35 experts); ours only from --ratings."

FID, FVD, FVMD = _c("fid", "FID", False), _c("fvd", "FVD", False), _c("fvmd", "FVMD", False)
FAD, STOI = _c("fad", "FAD", False), _c("stoi", "STOI", True, "0-1")
MCD = _c("mcd_paper", "MFCC dist. (paper's MCD)", False, note=_MFCC_NOTE)
STANDARD_MCD = _c("mcd", "MCD", False, "dB", _MCD_NOTE)


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
    (_c("psnr", "PSNR", True, "dB", "PSNR and SSIM: per frame, mean per clip, mean over clips."),
     _c("ssim", "SSIM", True), _c("kvd", "KVD", False), _c("lpips", "LPIPS", False),
     _c("mos_video", "MOS", True, "0-5", _MOS_NOTE)),
    (("", "Hallo", (33.01, 0.68, 44.12, 0.51, 4.10)), ("", "Audio2Head", (29.21, 0.51, 49.09, 0.23, 3.51)),
     ("", "EAT", (24.45, 0.52, 49.12, 0.52, 3.57)), ("", "SadTalker", (29.72, 0.59, 49.61, 0.53, 3.51)),
     ("", "Proposed", (35.94, 0.73, 41.22, 0.54, 4.22))),
)

TABLE3 = PaperTable(3, "Speech generation: FAD, MCD, STOI per test set", (FAD, MCD, STOI), extra_columns=(STANDARD_MCD,),
                    rows=_blocks(_AUDIO_MODELS, {
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
    (_c("estoi", "ESTOI", True, "0-1"),
     _c("pesq", "PESQ", True, note="PESQ: ours is wideband PESQ (ITU-T P.862.2) at 16 kHz, MOS-LQO 1.04-4.64."),
     _c("wer", "WER", False, "0-1", "WER: word error rate as a fraction; ours after Whisper's English normaliser."),
     _c("mos_audio", "MOS", True, "0-5", _MOS_NOTE)),
    (("", "Tortoise", (0.42, 3.80, 0.21, 4.32)), ("", "Your_TTS", (0.31, 3.71, 0.30, 3.61)),
     ("", "XTTS_v2", (0.33, 3.51, 0.34, 3.21)), ("", "GlowTTS", (0.39, 3.83, 0.33, 3.52)),
     ("", "Proposed", (0.43, 4.01, 0.18, 4.56))),
    extra_columns=(_c("dnsmos", "DNSMOS ovr", True, "1-5", "DNSMOS ovr: predicted MOS (DNSMOS P.835 overall), not in the paper."),),
)

TABLE5 = PaperTable(
    5, "Audio-video synchronisation: LSE-C, LSE-D",
    (_c("lse_c", "LSE-C", True, note="LSE-C/LSE-D: SyncNet confidence and distance (Wav2Lip protocol)."),
     _c("lse_d", "LSE-D", False)),
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
ABLATION_TABLES = (6, 7)
"""The ablation tables: one row of ours per config (``python -m experiments.reproduce``)."""
ABLATION_CONFIGS: dict[int, dict[str, str]] = {
    6: {"no_te": "DC + EC (no TE)", "dc_ec_off": "ETE only", "ec_off": "ETE + DC", "dc_off": "ETE + EC (no row "
        "of the paper)", "ste": "STE + DC + EC", "ete": "ETE + DC + EC"},
    7: {"only_visual_tokens": "Only Visual Tokens Attended", "only_audio_tokens": "Only Audio Tokens Attended",
        "no_audio_sequence": "No audio sequence encoding", "no_audio_profile": "No audio profile encoding",
        "no_visual_tokens": "No visual token encoding", "ete": "Proposed Model"},
}
"""Per ablation table, config name (``experiments/configs/<name>.yaml``) -> the paper's row it trains."""
ABLATION_TEST_SET = "VoxCeleb"
"""The test set of the paper's ablation rows (they repeat its VoxCeleb numbers of Tables 1 and 3)."""


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------



NOT_IN_PAPER = "not reported in the paper"
NOT_COMPUTED = "not computed in this run"


@dataclass(frozen=True)
class OurRow:
    """Our results as one row of the tables, with what the reader needs to judge them.

    Attributes:
        values: result key -> value; ``None``/NaN/inf print as "-".
        name: model label (printed ``"<name> (<tag>)"``).
        dataset: test set of our clips (block of Tables 1 and 3), or ``None``.
        num_clips: clips scored.
        counts: result key -> clips behind the value (an int or a phrase such as
            ``"3 vs 5 real"``).
        reasons: result key -> why the value is missing (footnote of its "-").
        notes: result key -> how the value was aggregated (e.g. the PSNR convention).
        tag: what the row is, printed after the name: ``"ours"``, or ``"scored here"`` for a
            baseline's own videos scored by our code.
        missing: why the whole row is empty (no checkpoint, no test split): the reason of every
            "-" that ``reasons`` does not explain.
        remarks: notes on the whole row (e.g. clips that failed), printed under the table.
    """

    values: Mapping[str, float | None]
    name: str = "nfy"
    dataset: str | None = None
    num_clips: int | None = None
    counts: Mapping[str, int | str] = field(default_factory=dict)
    reasons: Mapping[str, str] = field(default_factory=dict)
    notes: Mapping[str, str] = field(default_factory=dict)
    tag: str = "ours"
    missing: str | None = None
    remarks: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """``"<name> (<tag>)"``, as printed in the Model column."""
        return f"{self.name} ({self.tag})"

    def reason(self, key: str) -> str:
        """Why the value of ``key`` is missing (footnote text of its "-")."""
        return self.reasons.get(key) or self.missing or NOT_COMPUTED


@dataclass
class TableLayout:
    """What both renderers print: caption, columns, cells and notes.

    ``rows`` hold ``(text, marker)`` cells, ``marker`` the number of the footnote that explains a
    "-" (``None`` elsewhere); ``footnotes`` are ``(marker, reason)``; ``notes`` plain lines.
    ``sources`` says per row where it comes from (``"paper"`` or our row's tag), ``values`` holds
    its unrounded numbers (column order), ``counts`` its clips per column (``None`` for the
    paper's), and ``rules`` the indices of the rows a horizontal rule goes above (LaTeX).
    """

    caption: str
    columns: tuple[Column, ...]
    leading: list[str]
    rows: list[list[tuple[str, str | None]]]
    ours_index: int | None
    notes: list[str]
    footnotes: list[tuple[str, str]]
    sources: list[str] = field(default_factory=list)
    values: list[list[float | None]] = field(default_factory=list)
    counts: list[list[int | str | None]] = field(default_factory=list)
    rules: list[int] = field(default_factory=list)


def _fmt(value: float | None) -> str | None:
    if value is None or not math.isfinite(value):
        return None
    return f"{value:.2f}" if abs(value) >= 0.01 or value == 0 else f"{value:.3g}"


class _Footnotes:
    """Numbers the reasons behind "-" cells in order of first use; one number per distinct reason."""

    def __init__(self) -> None:
        self.markers: dict[str, str] = {}

    def cell(self, text: str | None, reason: str) -> tuple[str, str | None]:
        if text is not None:
            return text, None
        return "-", self.markers.setdefault(reason, str(len(self.markers) + 1))

    def items(self) -> list[tuple[str, str]]:
        return [(marker, reason) for reason, marker in self.markers.items()]


def _clip_note(columns: tuple[Column, ...], ours: list[OurRow], labels: list[str]) -> str:
    paper = "the paper does not say how many clips its rows cover"
    parts = []
    for row, label in zip(ours, labels):
        if row.missing is not None and not row.values:
            continue  # its "-" cells say why it has no clips
        total = "an unknown number of" if row.num_clips is None else str(row.num_clips)
        per_column = [f"{c.label.split(' (')[0]} {row.counts[c.key]}" for c in columns if c.key in row.counts]
        detail = f" (per column: {', '.join(per_column)})" if per_column else ""
        parts.append(f"{label} covers {total} clips{detail}")
    return f"Clips: {'; '.join(parts + [paper])}."


def _notes(table: PaperTable, columns: tuple[Column, ...], ours: list[OurRow], labels: list[str]) -> list[str]:
    notes = [_clip_note(columns, ours, labels)] if ours else [_clip_note(columns, [], [])]
    notes += [f"{label}: {remark}" for row, label in zip(ours, labels) for remark in row.remarks]
    test_sets = list(dict.fromkeys(row.dataset for row in ours if row.dataset))
    if not table.has_blocks:
        where = f"; ours: {', '.join(test_sets) or 'test set not given (--dataset)'}" if ours else ""
        notes.append(f"The paper's rows name no test set{where}.")
    elif ours and not test_sets:
        notes.append("Our row's test set is not given (--dataset); the paper's rows of every test set are shown.")
    extra = [name for name in test_sets if name not in DATASETS]
    if table.has_blocks and extra:
        notes.append(f"{', '.join(extra)}: test set(s) the paper does not use; their blocks hold our rows only.")
    if table.number in ABLATION_CONFIGS and ours:
        pairs = ", ".join(f"{config} = {row}" for config, row in ABLATION_CONFIGS[table.number].items())
        notes.append(f"The paper's ablation rows are on {ABLATION_TEST_SET}. Our rows are named by their config "
                     f"(experiments/configs/<name>.yaml), which trains the paper's row: {pairs}.")
    for column in columns:
        if column.note and column.note not in notes:
            notes.append(column.note)
        for row, label in zip(ours, labels):
            if column.key in row.notes:
                notes.append(f"{column.label.split(' (')[0]}, {label}: {row.notes[column.key]}")
    return notes


def _as_rows(ours: OurRow | Sequence[OurRow] | None) -> list[OurRow]:
    if ours is None:
        return []
    return [ours] if isinstance(ours, OurRow) else list(ours)


def _labels(table: PaperTable, ours: list[OurRow]) -> list[str]:
    """Model-column labels of our rows; the test set is added where the table has no dataset column."""
    several = len({row.dataset for row in ours}) > 1
    if table.has_blocks or not several:
        return [row.label for row in ours]
    return [f"{row.name} ({row.tag}, {row.dataset or 'test set not given'})" for row in ours]


def _groups(table: PaperTable, ours: list[OurRow], blocks: Sequence[str] | None):
    """``(paper rows, our rows)`` per block, in printing order."""
    if not table.has_blocks:
        return [(list(table.rows), list(range(len(ours))))]
    order = list(blocks) if blocks is not None else list(dict.fromkeys(r.dataset for r in ours if r.dataset))
    if not order:
        return [(list(table.rows), list(range(len(ours))))]
    groups = [([row for row in table.rows if row[0] == name], [i for i, r in enumerate(ours) if r.dataset == name])
              for name in order]
    rest = [i for i, r in enumerate(ours) if r.dataset not in order]
    return groups + ([([], rest)] if rest else [])


def layout(table: PaperTable, ours: OurRow | Sequence[OurRow] | None = None,
           blocks: Sequence[str] | None = None) -> TableLayout:
    """Caption, cells and notes of ``table``: the paper's rows, then ours.

    Args:
        table: the paper's table.
        ours: one row of ours or several (checkpoints, datasets, baselines).
        blocks: Tables 1 and 3: the test sets to show, in order, each with the paper's rows of
            it (if any) and then our rows of it. Default: the test sets of our rows (one block
            for one row), or every paper row when none of ours names one.
    """
    rows_ours = _as_rows(ours)
    labels = _labels(table, rows_ours)
    columns = table.columns + table.extra_columns
    shown = list(blocks) if blocks is not None else list(dict.fromkeys(r.dataset for r in rows_ours if r.dataset))
    single = shown[0] if len(shown) == 1 and table.has_blocks else None
    caption = f"Table {table.number}: {table.title}" + (f" ({single})" if single else "")
    lay = TableLayout(caption, columns, ["Dataset", "Model"] if table.has_blocks else ["Model"], [], None, [], [])
    marks = _Footnotes()
    for paper_rows, our_indices in _groups(table, rows_ours, blocks):
        if not paper_rows and not our_indices:
            continue
        if lay.rows:
            lay.rules.append(len(lay.rows))
        for ds, model, values in paper_rows:
            _add_row(lay, [ds] if table.has_blocks else [], model, "paper", list(values) + [None] * len(table.extra_columns),
                     [marks.cell(_fmt(v), NOT_IN_PAPER) for v in values] + [marks.cell(None, NOT_IN_PAPER)
                                                                         for _ in table.extra_columns], None)
        for n, i in enumerate(our_indices):
            row = rows_ours[i]
            if n == 0 and paper_rows:
                lay.rules.append(len(lay.rows))
            lay.ours_index = len(lay.rows) if lay.ours_index is None else lay.ours_index
            values = [row.values.get(c.key) for c in columns]
            _add_row(lay, [row.dataset or ""] if table.has_blocks else [], labels[i], row.tag, values,
                     [marks.cell(_fmt(v), row.reason(c.key)) for v, c in zip(values, columns)],
                     [row.counts.get(c.key, row.num_clips) for c in columns])
    lay.notes, lay.footnotes = _notes(table, columns, rows_ours, labels), marks.items()
    return lay


def _add_row(lay: TableLayout, dataset: list[str], model: str, source: str, values: list, cells: list,
             counts: list | None) -> None:
    lay.rows.append([(text, None) for text in dataset + [model]] + cells)
    lay.sources.append(source)
    lay.values.append([v if v is None or math.isfinite(v) else None for v in values])
    lay.counts.append(counts if counts is not None else [None] * len(values))


def _md_cell(text: str, marker: str | None) -> str:
    text = text.replace("|", r"\|")
    return f"{text}[{marker}]" if marker else text


def render_markdown(table: PaperTable, ours: OurRow | Sequence[OurRow] | None = None,
                    blocks: Sequence[str] | None = None) -> str:
    """Table ``table`` in Markdown: the paper's rows, ``ours``, then the notes and footnotes (see :func:`layout`)."""
    lay = layout(table, ours, blocks)
    header = lay.leading + [f"{c.heading} {'↑' if c.higher_is_better else '↓'}" for c in lay.columns]
    caption = lay.caption.replace(f"Table {table.number}: ", f"**Table {table.number}.** ", 1)
    lines = [caption, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md_cell(*cell) for cell in row) + " |" for row in lay.rows]
    notes = ["↑/↓: higher/lower is better.", *lay.notes, *(f"[{marker}] {reason}" for marker, reason in lay.footnotes)]
    for note in notes:  # one paragraph each
        lines += ["", note]
    return "\n".join(lines) + "\n"


_TEX_ESCAPES = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
    "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "`": r"\textasciigrave{}", "<": r"\textless{}",
    ">": r"\textgreater{}",
}


def _tex(text: str) -> str:
    # "--" would print as an en dash: keep command-line flags literal
    return "".join(_TEX_ESCAPES.get(ch, ch) for ch in text).replace("--", "-{}-")


def _tex_cell(text: str, marker: str | None) -> str:
    return _tex(text) + (f"$^{{{marker}}}$" if marker else "")


def render_latex(table: PaperTable, ours: OurRow | Sequence[OurRow] | None = None,
                 blocks: Sequence[str] | None = None) -> str:
    """Table ``table`` as a LaTeX ``tabular`` (booktabs), the same cells and notes as :func:`render_markdown`."""
    lay = layout(table, ours, blocks)
    header = [_tex(h) for h in lay.leading]
    header += [_tex(c.heading) + (r" $\uparrow$" if c.higher_is_better else r" $\downarrow$") for c in lay.columns]
    lines = [
        r"\begin{table}[t]", r"\centering", rf"\caption{{{_tex(lay.caption)}}}",
        r"\begin{tabular}{" + "l" * len(lay.leading) + "r" * len(lay.columns) + "}",
        r"\toprule", " & ".join(header) + r" \\", r"\midrule",
    ]
    for i, row in enumerate(lay.rows):
        if i in lay.rules:
            lines.append(r"\midrule")
        lines.append(" & ".join(_tex_cell(*cell) for cell in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\par\smallskip\footnotesize", r"$\uparrow$/$\downarrow$: higher/lower is better.\par"]
    lines += [_tex(note) + r"\par" for note in lay.notes]
    lines += [f"$^{{{marker}}}$ {_tex(reason)}" + r"\par" for marker, reason in lay.footnotes]
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


CSV_FIELDS: tuple[str, ...] = (
    "table", "dataset", "model", "source", "metric", "column", "unit", "higher_is_better", "value", "clips", "reason",
)
"""Columns of :func:`render_csv`: one record per cell of a table's metric columns."""


def render_csv(table: PaperTable, ours: OurRow | Sequence[OurRow] | None = None,
               blocks: Sequence[str] | None = None, header: bool = True) -> str:
    """The cells of :func:`layout` as CSV records (:data:`CSV_FIELDS`), unrounded.

    ``source`` is ``paper`` or our row's tag; ``value`` is empty for a "-", whose ``reason``
    then says why; ``clips`` is the number of clips behind our value (empty for the paper's).
    """
    lay = layout(table, ours, blocks)
    reasons = dict(lay.footnotes)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    if header:
        writer.writerow(CSV_FIELDS)
    for cells, source, values, counts in zip(lay.rows, lay.sources, lay.values, lay.counts):
        lead = [text for text, _ in cells[: len(lay.leading)]]
        dataset, model = (lead[0], lead[1]) if len(lead) == 2 else ("", lead[0])
        for column, (_, marker), value, count in zip(lay.columns, cells[len(lay.leading):], values, counts):
            writer.writerow([table.number, dataset, model, source, column.key, column.label, column.unit,
                             int(column.higher_is_better), "" if value is None else repr(float(value)),
                             "" if count is None or source == "paper" else count, reasons.get(marker, "")])
    return buf.getvalue()
