"""Asset checks generated from the Pandera contracts.

A local stand-in for the shared generator planned in ``school_equity/contracts/checks.py``
(not on main when this was written); same idea: load the whole table from the lake,
validate eagerly, report the failure cases in the check's metadata, block downstream
when it fails. Swap the call sites to the shared one when it lands.
"""

from collections.abc import Callable

import dagster as dg
import pandera.polars as pa
import polars as pl
from pandera.errors import SchemaError, SchemaErrors

from school_equity.contracts.sources import validate_eagerly
from school_equity.lake import Lake
from school_equity.resources import LakeResource

MAX_FAILURE_ROWS = 20

# what a loader returns: (label, frame) per part of the table (one Bronze file per vintage,
# or the one Silver table); an empty list means nothing was ever written
TableLoader = Callable[[Lake], list[tuple[str, pl.DataFrame]]]


def contract_failures(contract: type[pa.DataFrameModel], frame: pl.DataFrame) -> pl.DataFrame | None:
    """Pandera's failure cases for ``frame`` (None when it passes)."""
    try:
        validate_eagerly(contract, frame)
    except SchemaErrors as exc:
        return exc.failure_cases
    except SchemaError as exc:  # raised instead of SchemaErrors for some schema-level errors
        return pl.DataFrame(
            {"failure_case": [str(exc.failure_cases)], "schema_context": ["DataFrameSchema"],
             "column": [None], "check": [str(exc.check)], "check_number": [None], "index": [None]},
            schema_overrides={"column": pl.String, "check_number": pl.Int32, "index": pl.Int32},
        )
    return None


def failure_metadata(failures: pl.DataFrame) -> dict:
    per_check = failures.group_by("column", "check").len().sort("len", descending=True)
    sample = failures.head(MAX_FAILURE_ROWS).select(
        pl.col("column").fill_null(""), "check", pl.col("failure_case").cast(pl.String).str.slice(0, 120), "index"
    )
    lines = ["| column | check | failure case | row |", "|---|---|---|---|"]
    lines += [
        f"| {r['column']} | {r['check']} | {str(r['failure_case']).replace('|', '/')} | {r['index']} |"
        for r in sample.iter_rows(named=True)
    ]
    return {
        "failure_count": dg.MetadataValue.int(failures.height),
        "failures_by_check": dg.MetadataValue.json(
            {f"{r['column'] or 'table'}: {r['check']}": r["len"] for r in per_check.iter_rows(named=True)}
        ),
        "failure_cases": dg.MetadataValue.md("\n".join(lines)),
    }


def build_contract_check(
    *,
    asset_key: dg.AssetKey,
    name: str,
    contract: type[pa.DataFrameModel],
    load: TableLoader,
    blocking: bool = True,
    description: str | None = None,
) -> dg.AssetChecksDefinition:
    """A check that validates every row the asset has landed against ``contract``."""

    @dg.asset_check(
        asset=asset_key,
        name=name,
        blocking=blocking,
        description=description or f"Every row matches the {contract.__name__} contract (Pandera, data and schema).",
        metadata={"contract": f"{contract.__module__}.{contract.__qualname__}"},
    )
    def _check(lake: LakeResource) -> dg.AssetCheckResult:
        parts = load(lake.get_lake())
        if not parts:
            return dg.AssetCheckResult(
                passed=False, severity=dg.AssetCheckSeverity.ERROR,
                description="nothing landed yet", metadata={"rows_checked": 0},
            )
        failures, rows = [], 0
        for label, frame in parts:
            rows += frame.height
            found = contract_failures(contract, frame)
            if found is not None:
                failures.append(found.with_columns(pl.lit(label).alias("part")))
        metadata: dict = {"rows_checked": rows, "parts_checked": [label for label, _ in parts]}
        if failures:
            metadata.update(failure_metadata(pl.concat(failures, how="diagonal_relaxed")))
        return dg.AssetCheckResult(passed=not failures, severity=dg.AssetCheckSeverity.ERROR, metadata=metadata)

    return _check
