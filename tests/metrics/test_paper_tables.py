"""Several rows of ours in one table: the four-dataset blocks of Tables 1/3, ablation rows, CSV records."""

from __future__ import annotations

import csv
import io
import re

from metrics.paper_tables import (
    ABLATION_CONFIGS,
    CSV_FIELDS,
    DATASETS,
    TABLES,
    OurRow,
    layout,
    render_csv,
    render_latex,
    render_markdown,
)

ETE_HDTF = OurRow({"fid": 20.0, "fvd": 30.0}, "ete", "HDTF", num_clips=4, counts={"fid": 4, "fvd": 4},
                  reasons={"fvmd": "missing weights ['pips2']"})
ETE_DEMO = OurRow({"fid": 90.0, "fvd": 80.0, "fvmd": 7.0}, "ete", "demo", num_clips=2, counts={"fid": 2})
HALLO_HDTF = OurRow({"fid": 25.0}, "hallo", "HDTF", num_clips=4, tag="scored here")
NO_VOX = OurRow({}, "ete", "VoxCeleb", missing="no VoxCeleb test split in the checkpoint's DataModule")


def _md_rows(md: str) -> list[list[str]]:
    lines = [line for line in md.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines[1:]]


def _footnotes(md: str) -> dict[str, str]:
    return dict(re.findall(r"^\[(\d+)\] (.*)$", md, flags=re.MULTILINE))


def test_table_1_shows_every_block_with_our_rows_below_the_papers() -> None:
    blocks = [*DATASETS, "demo"]
    md = render_markdown(TABLES[1], [NO_VOX, ETE_HDTF, HALLO_HDTF, ETE_DEMO], blocks)
    rows = _md_rows(md)
    assert md.splitlines()[0] == "**Table 1.** Video generation: FID, FVD, FVMD per test set"
    assert [r[0] for r in rows] == ["VoxCeleb"] * 6 + ["FakeAVCeleb"] * 5 + ["CelebV-HQ"] * 5 + ["HDTF"] * 7 + ["demo"]
    assert rows[5][1] == "ete (ours)" and rows[5][2].startswith("-[")
    assert _footnotes(md)[rows[5][2][2:-1]] == "no VoxCeleb test split in the checkpoint's DataModule"
    assert rows[21] == ["HDTF", "ete (ours)", "20.00", "30.00", rows[21][4]]
    assert _footnotes(md)[rows[21][4][2:-1]] == "missing weights ['pips2']"
    assert rows[22][:3] == ["HDTF", "hallo (scored here)", "25.00"] and rows[23] == ["demo", "ete (ours)", "90.00", "80.00", "7.00"]
    assert "demo: test set(s) the paper does not use" in md
    assert "ete (ours) covers 4 clips" in md and "hallo (scored here) covers 4 clips" in md
    lay = layout(TABLES[1], [NO_VOX, ETE_HDTF, HALLO_HDTF, ETE_DEMO], blocks)
    assert lay.rules == [5, 6, 11, 16, 21, 23] and lay.sources.count("paper") == 20
    # the header's rule, one above each block and one above our rows of a block (an empty block has none)
    assert render_latex(TABLES[1], [NO_VOX, ETE_HDTF], blocks).count(r"\midrule") == 1 + 3 + 2


def test_tables_without_test_sets_name_it_beside_each_row() -> None:
    md = render_markdown(TABLES[2], [ETE_HDTF, ETE_DEMO])
    models = [r[0] for r in _md_rows(md)]
    assert models[-2:] == ["ete (ours, HDTF)", "ete (ours, demo)"]
    assert "The paper's rows name no test set; ours: HDTF, demo." in md
    # one row keeps the short label of the evaluate CLI
    assert _md_rows(render_markdown(TABLES[2], ETE_HDTF))[-1][0] == "ete (ours)"


def test_ablation_rows_are_named_by_config_and_say_what_is_missing() -> None:
    ste = OurRow({}, "ste", "demo", missing="missing checkpoint: give --ckpt ste=PATH")
    md = render_markdown(TABLES[6], [ETE_DEMO, ste])
    rows = _md_rows(md)
    assert [r[0] for r in rows][-2:] == ["ete (ours)", "ste (ours)"]
    assert {_footnotes(md)[cell[2:-1]] for cell in rows[-1][1:]} == {"missing checkpoint: give --ckpt ste=PATH"}
    assert "ste = STE + DC + EC" in md and "on VoxCeleb" in md
    assert set(ABLATION_CONFIGS[7]) >= {"ete", "no_visual_tokens"}


def test_csv_records_hold_unrounded_values_clips_and_reasons() -> None:
    records = list(csv.DictReader(io.StringIO(render_csv(TABLES[1], [ETE_HDTF, HALLO_HDTF], ["HDTF"]))))
    assert tuple(records[0]) == CSV_FIELDS and len(records) == (5 + 2) * 3
    paper = records[0]
    assert (paper["table"], paper["dataset"], paper["model"], paper["source"]) == ("1", "HDTF", "Audio2Head", "paper")
    assert (paper["metric"], float(paper["value"]), paper["clips"]) == ("fid", 37.78, "")
    ours = [r for r in records if r["model"] == "ete (ours)"]
    assert [(r["metric"], r["value"], r["clips"]) for r in ours] == [("fid", "20.0", "4"), ("fvd", "30.0", "4"),
                                                                    ("fvmd", "", "4")]
    assert ours[2]["reason"] == "missing weights ['pips2']" and ours[0]["source"] == "ours"
    assert [r["source"] for r in records if r["model"] == "hallo (scored here)"] == ["scored here"] * 3
