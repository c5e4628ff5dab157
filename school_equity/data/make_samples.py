"""Regenerate the sample files shipped in ``school_equity/data/public`` from the
publishers' originals (``../shared/data/public`` in the developers' layout).

The subset keeps the publishers' quirks on purpose (byte-order mark, ``-999``
sentinels written two ways, ``N/A`` strings, the header with an embedded
newline, right-padded DBNs, multi-line address fields): the pipeline must
handle them, so the samples must still have them. Only columns the pipeline
does not use, and personal names and phone numbers, are dropped; SVI keeps the
five NYC counties.

    python -m school_equity.data.make_samples SOURCE_DIR
"""

from __future__ import annotations

import csv
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).parent / "public"

NYC_COUNTIES = {"36005", "36047", "36061", "36081", "36085"}
SVI_THEME_VARIABLES = [
    "POV150", "UNEMP", "HBURD", "NOHSDP", "UNINSUR",
    "AGE65", "AGE17", "DISABL", "SNGPNT", "LIMENG",
    "MINRTY",
    "MUNIT", "MOBILE", "CROWD", "NOVEH", "GROUPQ",
]
SVI_COLUMNS = (
    ["ST", "STATE", "ST_ABBR", "STCNTY", "COUNTY", "FIPS", "LOCATION", "AREA_SQMI", "E_TOTPOP"]
    + [f"EP_{v}" for v in SVI_THEME_VARIABLES]
    + [f"EPL_{v}" for v in SVI_THEME_VARIABLES]
    + [f"SPL_THEME{i}" for i in range(1, 5)]
    + [f"RPL_THEME{i}" for i in range(1, 5)]
    + ["SPL_THEMES", "RPL_THEMES"]
    + [f"F_THEME{i}" for i in range(1, 5)]
    + ["F_TOTAL"]
)
LOCATION_DROP = {
    "PRINCIPAL_NAME", "PRINCIPAL_TITLE", "PRINCIPAL_PHONE_NUMBER", "FAX_NUMBER",
    "COMMUNITY_SCHOOL_SUP_NAME", "FIELD_SUPPORT_CENTER_LEADER_NAME",
    "SCHOOL_SUPPORT_TEAM_LEADER_NAME", "HIGHSCHOOL_NETWORK_SUPERINTENDENT",
}


def _subset(src: Path, dst: Path, columns, row_filter=None, encoding="utf-8") -> int:
    with open(src, newline="", encoding=encoding) as f:
        reader = csv.reader(f)
        header = next(reader)
        clean = [h.lstrip("\ufeff") for h in header]
        keep = [i for i, h in enumerate(clean) if columns(h)]
        rows = 0
        # the source's encoding is kept as it is (the SVI file's BOM included)
        with open(dst, "w", newline="", encoding=encoding) as out:
            w = csv.writer(out, lineterminator="\r\n" if _crlf(src) else "\n")
            w.writerow([header[i] for i in keep])
            for rec in reader:
                if row_filter and not row_filter(dict(zip(clean, rec, strict=False))):
                    continue
                w.writerow([rec[i] for i in keep])
                rows += 1
    return rows


def _crlf(path: Path) -> bool:
    with open(path, "rb") as f:
        return b"\r\n" in f.read(65536)


def main(source_dir: str) -> None:
    src = Path(source_dir)
    HERE.mkdir(parents=True, exist_ok=True)
    wanted = set(SVI_COLUMNS)
    n = _subset(
        src / "svi_2022_new_york_tracts.csv",
        HERE / "svi_2022_new_york_tracts.csv",
        lambda h: h in wanted,
        row_filter=lambda r: r["STCNTY"] in NYC_COUNTIES,
        encoding="utf-8",  # the BOM stays in the first header cell
    )
    print("svi rows", n)
    n = _subset(
        src / "school_locations_2017_18.csv",
        HERE / "school_locations_2017_18.csv",
        lambda h: h not in LOCATION_DROP,
    )
    print("location rows", n)
    shutil.copyfile(
        src / "school_survey_2019_student_public_data_file.csv",
        HERE / "school_survey_2019_student_public_data_file.csv",
    )
    print("survey file copied unchanged")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/public")
