"""Asset checks generated from Pandera (polars) contracts, plus the same validation
for use *before* a write.

A contract is a ``pandera.polars.DataFrameModel`` whose ``Config.name`` is the
table's path in the lake (``silver/survey_submissions``) and whose
``Config.unique`` is the table's key. Everything here derives from it: check
names, the ``dagster/column_schema`` metadata and the error raised when a frame
must not land.

Validation is always eager and complete: a DataFrame (never a LazyFrame, which
Pandera checks for schema only by default), ``lazy=True`` to collect every
failure instead of the first, and a config context that forces
schema-and-data depth whatever ``PANDERA_VALIDATION_*`` says in the
environment (a check that silently skipped its data rules would pass
everything).
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import dagster as dg
import pandera.polars as pa
import polars as pl
from pandera.config import ValidationDepth, config_context

from school_equity.lake import Lake

Contract = type[pa.DataFrameModel]
ReadTable = Callable[[Lake], pl.DataFrame]
# (lake, partition keys, table key) -> (rows those partitions wrote, the table's rows sharing their keys)
ReadPartitions = Callable[[Lake, list[str], list[str]], tuple[pl.DataFrame, "SharedKeys"]]


def with_metadata(
    result: dg.AssetCheckResult, extra: dict[str, Any], *, description_prefix: str = ""
) -> dg.AssetCheckResult:
    """``result`` with more metadata (and, when it failed, a prefix to its description)."""
    description = result.description
    if description_prefix and not result.passed:
        description = f"{description_prefix}{description}"
    return dg.AssetCheckResult(
        check_name=result.check_name,
        passed=result.passed,
        severity=result.severity,
        description=description,
        metadata={**result.metadata, **extra},
    )


def run_partition_keys(context: dg.AssetCheckExecutionContext) -> list[str] | None:
    """The run's partition keys, sorted, or None for an unpartitioned run."""
    if not (context.has_partition_key or context.has_partition_key_range):
        return None
    return sorted(context.partition_keys)

SAMPLE_SIZE = 10
_MAX_TEXT = 200


# -- names derived from a contract --------------------------------------------
def contract_table(contract: Contract) -> str:
    """The table's path in the lake, e.g. ``silver/survey_submissions``."""
    name = contract.to_schema().name
    if not name:
        raise ValueError(f"{contract.__name__} has no Config.name (the table's path, e.g. 'silver/x')")
    return name


def _short(contract: Contract) -> str:
    return contract_table(contract).rsplit("/", 1)[-1]


def contract_check_name(contract: Contract) -> str:
    return f"contract_{_short(contract)}"


def unique_key_check_name(contract: Contract) -> str:
    return f"unique_key_{_short(contract)}"


def contract_key(contract: Contract) -> list[str]:
    """The table's key (``Config.unique``), or [] when it has none."""
    unique = contract.to_schema().unique
    if unique is None:
        return []
    return [unique] if isinstance(unique, str) else list(unique)


def contract_columns(contract: Contract, *, required_only: bool = False) -> list[str]:
    cols = contract.to_schema().columns
    return [n for n, c in cols.items() if c.required or not required_only]


def contract_polars_schema(contract: Contract, columns: Sequence[str] | None = None) -> pl.Schema:
    """The polars dtypes of the contract's columns (all, or ``columns`` in that order)."""
    cols = contract.to_schema().columns
    names = list(columns) if columns is not None else list(cols)
    return pl.Schema({n: cols[n].dtype.type for n in names})


def empty_frame(contract: Contract, *, required_only: bool = True) -> pl.DataFrame:
    return pl.DataFrame(schema=contract_polars_schema(contract, contract_columns(contract, required_only=required_only)))


# -- validation ----------------------------------------------------------------
@dataclass(frozen=True)
class ContractReport:
    """The outcome of validating one frame against one contract."""

    table: str
    rows: int
    failure_cases: pl.DataFrame  # Pandera's failure cases; empty when the frame passed
    sample: list[dict[str, Any]]  # failing records, each with the rules it broke

    @property
    def passed(self) -> bool:
        return self.failure_cases.height == 0

    @property
    def failure_count(self) -> int:
        return self.failure_cases.height

    @property
    def failing_rows(self) -> int:
        return self.failure_cases.get_column("index").drop_nulls().n_unique()

    def by_rule(self) -> list[dict[str, Any]]:
        """One entry per (column, rule): how many failure cases and a few example values."""
        if self.passed:
            return []
        fc = self.failure_cases.with_columns(pl.col("column").fill_null("<table>"))
        out = (
            fc.group_by(["column", "check"], maintain_order=True)
            .agg(
                pl.len().alias("count"),
                pl.col("failure_case").cast(pl.String).drop_nulls().unique(maintain_order=True).head(3).alias("examples"),
            )
            .to_dicts()
        )
        return [{**r, "examples": [_clip(e) for e in r["examples"]]} for r in out]

    def summary(self) -> str:
        rules = "; ".join(f"{r['column']}: {r['check']} x{r['count']}" for r in self.by_rule())
        return (
            f"{self.table} violates its contract: {self.failure_count} failure case(s) in "
            f"{self.failing_rows} of {self.rows} row(s) [{rules}]"
        )


class ContractViolation(ValueError):
    """A frame broke its table's contract; raised before it could be written."""

    def __init__(self, report: ContractReport):
        self.report = report
        sample = json.dumps(report.sample[:5], default=str)
        super().__init__(f"{report.summary()}. Sample failing records: {sample}")


def _clip(v: Any) -> Any:
    if isinstance(v, bytes):
        v = v.decode("utf-8", errors="replace")
    if isinstance(v, dt.datetime | dt.date):
        return v.isoformat()
    if isinstance(v, str) and len(v) > _MAX_TEXT:
        return v[:_MAX_TEXT] + "..."
    if isinstance(v, list):
        return [_clip(x) for x in v[:10]]
    if isinstance(v, dict):
        return {k: _clip(x) for k, x in v.items()}
    return v


def _sample(df: pl.DataFrame, failure_cases: pl.DataFrame, n: int) -> list[dict[str, Any]]:
    rows = (
        failure_cases.filter(pl.col("index").is_not_null())
        .with_columns(rule=pl.col("column").fill_null("<table>") + pl.lit(": ") + pl.col("check"))
        .group_by("index")
        .agg(pl.col("rule").unique(maintain_order=True))
        .sort("index")
        .head(n)
    )
    out = []
    for idx, rules in rows.iter_rows():
        if idx >= df.height:  # defensive: Pandera indexes the validated frame
            continue
        record = {k: _clip(v) for k, v in df.row(idx, named=True).items()}
        out.append({"_row": idx, "_rules": rules, **record})
    return out


def _schema_for(contract: Contract, *, with_unique: bool) -> pa.DataFrameSchema:
    schema = contract.to_schema()
    if with_unique or schema.unique is None:
        return schema
    # The key is reported by its own check; validating it twice costs a second
    # pass over the largest tables and reports each duplicate twice.
    schema = copy.deepcopy(schema)
    schema.unique = None
    return schema


def _may_repeat_keys(df: pl.DataFrame, key: list[str]) -> bool:
    """False when no two rows of ``df`` can share a key: their key hashes are all distinct.

    Pandera's uniqueness rule builds a hash table of the key columns themselves (for a
    250k-record batch of the answers table, 1.4M pairs of strings: skipping it took the
    Silver step's validation peak down by 140-210 MiB); distinct 64-bit hashes prove the
    key holds at 8 bytes a row. When some
    hashes repeat (a duplicate, or a collision), the rule runs as written and reports
    the duplicated rows as before."""
    if not key or df.height < 2:
        return False
    if any(c not in df.columns for c in key):
        return True  # Pandera reports the missing key column
    # counting distinct hashes, not flagging repeated ones: 0.17 s against 0.9-1.6 s for
    # the 5.6M answer keys of a 1M-event batch
    return df.select(key_hash(key).n_unique()).item() < df.height


def validate_frame(
    df: pl.DataFrame, contract: Contract, *, check_unique: bool = True, sample_size: int = SAMPLE_SIZE
) -> ContractReport:
    """Validate ``df`` against ``contract`` (every rule, data included) and report."""
    if isinstance(df, pl.LazyFrame):  # a LazyFrame would validate the schema only
        df = df.collect()
    table = contract_table(contract)
    schema = _schema_for(contract, with_unique=check_unique and _may_repeat_keys(df, contract_key(contract)))
    with config_context(validation_enabled=True, validation_depth=ValidationDepth.SCHEMA_AND_DATA):
        try:
            schema.validate(df, lazy=True)
        except pa.errors.SchemaErrors as e:
            fc = e.failure_cases
            if not isinstance(fc, pl.DataFrame):  # defensive: other backends return pandas
                fc = pl.DataFrame(fc)
            return ContractReport(table, df.height, fc, _sample(df, fc, sample_size))
    empty = pl.DataFrame(
        schema={
            "failure_case": pl.String, "schema_context": pl.String, "column": pl.String,
            "check": pl.String, "check_number": pl.Int32, "index": pl.Int32,
        }
    )
    return ContractReport(table, df.height, empty, [])


def validate_or_raise(df: pl.DataFrame, contract: Contract, table: str | None = None) -> pl.DataFrame:
    """Validate before a write: return ``df`` unchanged, or raise ContractViolation
    naming the table, each broken rule with its count, and sample failing records."""
    validate_parts_or_raise([df], contract, table)
    return df


def validate_parts_or_raise(parts: Iterable[pl.DataFrame], contract: Contract, table: str | None = None) -> int:
    """``validate_or_raise`` for a frame that comes in parts, each validated and dropped
    before the next is built, so the whole frame is never held. The parts must split the
    contract's key (no key in two parts), or a duplicate across parts would go unseen.
    One ContractViolation covers every part's failures (``index`` and a sample's
    ``_row``: the row's position in the parts taken one after another). Returns the
    rows validated."""
    rows, failed, sample = 0, [], []
    for part in parts:
        report = validate_frame(part, contract)
        if not report.passed:
            failed.append(report.failure_cases.with_columns(pl.col("index") + rows))
            sample.extend({**r, "_row": r["_row"] + rows} for r in report.sample)
        rows += report.rows
    if failed:
        name = table or contract_table(contract)
        failure_cases = pl.concat(failed, how="vertical_relaxed")
        raise ContractViolation(ContractReport(name, rows, failure_cases, sample[:SAMPLE_SIZE]))
    return rows


def key_hash(key: Sequence[str]) -> pl.Expr:
    """A 64-bit hash of a row's key columns (polars' hash: the same within one process).
    Each column is hashed with its own seed and the hashes are combined, which takes half
    the time of hashing a struct of the columns (5.6M answer keys: 0.17 s against 0.36 s
    to count the distinct hashes)."""
    hashes = [pl.col(c).hash(seed=i) for i, c in enumerate(key)]
    out = hashes[0]
    for h in hashes[1:]:
        out = out ^ h
    return out


@dataclass(frozen=True)
class SharedKeys:
    """What a partition-scoped unique-key check needs of the whole table: how many of its
    rows share a key with the checked rows (``rows``), and the key columns of every row
    whose key hash occurs more than once among those (``candidates``; a real duplicate
    is always among them, a hash collision is resolved by comparing the keys)."""

    rows: int
    candidates: pl.DataFrame

    @classmethod
    def of_frame(cls, df: pl.DataFrame, key: Sequence[str]) -> SharedKeys:
        """A frame checked whole: every row is a candidate."""
        return cls(df.height, df.select(list(key)))


def rows_sharing_keys(table: pl.LazyFrame, wanted: pl.DataFrame, key: Sequence[str]) -> SharedKeys:
    """The rows of ``table`` that share a key with ``wanted``'s rows, read as key hashes.

    A semi-join on the key columns builds a hash table of every wanted key (for a batch of
    the answers table, 1.4M pairs of strings) and held about 500 MiB; a set of 64-bit
    hashes is 8 bytes a key, and the key columns themselves are read again only for the
    hashes that repeat (none, when the key holds).
    """
    key = list(key)
    hashed = key_hash(key).alias("_key_hash")
    wanted_hashes = wanted.select(hashed).get_column("_key_hash").unique()
    matched = (
        table.select(hashed)
        .filter(pl.col("_key_hash").is_in(wanted_hashes.implode()))
        .collect(engine="streaming")
        .get_column("_key_hash")
    )
    repeated = matched.value_counts().filter(pl.col("count") > 1).get_column("_key_hash")
    if repeated.len() == 0:
        return SharedKeys(matched.len(), pl.DataFrame(schema=table.select(key).collect_schema()))
    candidates = table.select(key).filter(key_hash(key).is_in(repeated.implode())).collect(engine="streaming")
    return SharedKeys(matched.len(), candidates)


def duplicate_keys(df: pl.DataFrame, key: Sequence[str]) -> pl.DataFrame:
    """Key values that occur more than once, with their count (column ``_count``)."""
    if df.height == 0:
        return df.select(key).with_columns(_count=pl.lit(0, pl.UInt32)).head(0)
    return df.group_by(list(key)).agg(pl.len().alias("_count")).filter(pl.col("_count") > 1).sort(list(key))


# -- Dagster metadata ------------------------------------------------------------
def _check_label(check: Any) -> str:
    return check.error or check.name or str(check)


def table_schema(contract: Contract, columns: Sequence[str] | None = None) -> dg.TableSchema:
    """The contract as a ``dg.TableSchema`` for ``dagster/column_schema``.

    ``columns`` restricts and orders it to the columns a table really has (an
    optional column such as a v2 field appears once it has been written).
    """
    schema = contract.to_schema()
    names = list(columns) if columns is not None else list(schema.columns)
    key = contract_key(contract)
    out = []
    for name in names:
        col = schema.columns.get(name)
        if col is None:
            out.append(dg.TableColumn(name=name, type="unknown", description="not in the contract"))
            continue
        other = [_check_label(c) for c in col.checks]
        if not col.required:
            other.append("optional column")
        out.append(
            dg.TableColumn(
                name=name,
                type=str(col.dtype),
                description=col.description,
                constraints=dg.TableColumnConstraints(
                    nullable=col.nullable, unique=bool(col.unique) or key == [name], other=other
                ),
            )
        )
    constraints = dg.TableConstraints(other=[f"unique key: ({', '.join(key)})"]) if key else None
    return dg.TableSchema(columns=out, constraints=constraints)


def _rules_markdown(rules: list[dict[str, Any]]) -> str:
    if not rules:
        return "No failures."
    lines = ["| column | rule | failure cases | examples |", "|---|---|---|---|"]
    for r in rules:
        ex = ", ".join(f"`{e}`" for e in r["examples"])
        lines.append(f"| {r['column']} | `{r['check']}` | {r['count']} | {ex} |")
    return "\n".join(lines)


def contract_check_result(
    df: pl.DataFrame, contract: Contract, *, check_name: str, check_unique: bool
) -> dg.AssetCheckResult:
    report = validate_frame(df, contract, check_unique=check_unique)
    rules = report.by_rule()
    return dg.AssetCheckResult(
        check_name=check_name,
        passed=report.passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=None if report.passed else report.summary(),
        metadata={
            "contract": contract.__name__,
            "rows_checked": report.rows,
            "failure_count": report.failure_count,
            "failing_rows": report.failing_rows,
            "failures_by_rule": dg.MetadataValue.md(_rules_markdown(rules)),
            "failures_by_rule_json": dg.MetadataValue.json(rules),
            "failure_sample": dg.MetadataValue.json(report.sample),
        },
    )


def unique_key_check_result(
    df: pl.DataFrame | SharedKeys, key: Sequence[str], *, check_name: str
) -> dg.AssetCheckResult:
    shared = df if isinstance(df, SharedKeys) else SharedKeys.of_frame(df, key)
    dups = duplicate_keys(shared.candidates, key)
    sample = [{k: _clip(v) for k, v in r.items()} for r in dups.head(SAMPLE_SIZE).to_dicts()]
    extra_rows = int(dups.get_column("_count").sum() - dups.height) if dups.height else 0
    return dg.AssetCheckResult(
        check_name=check_name,
        passed=dups.height == 0,
        severity=dg.AssetCheckSeverity.ERROR,
        description=None if dups.height == 0 else f"{dups.height} key value(s) of ({', '.join(key)}) occur more than once",
        metadata={
            "key": ", ".join(key),
            "rows_checked": shared.rows,
            "duplicate_keys": dups.height,
            "extra_rows": extra_rows,
            "duplicate_sample": dg.MetadataValue.json(sample),
        },
    )


# -- the check factory -------------------------------------------------------------
def contract_checks(
    asset_key: dg.AssetKey | Sequence[str] | str,
    contract: Contract,
    read_table: ReadTable,
    *,
    blocking: bool = True,
    unique_key: Sequence[str] | None = None,
    read_partitions: ReadPartitions | None = None,
) -> list[dg.AssetChecksDefinition]:
    """Asset checks for the whole current table behind ``asset_key``:

    - ``contract_<table>``: every rule of ``contract`` (types, nullability, ranges),
      failures counted per column and rule, with a sample, in the metadata;
    - ``unique_key_<table>``: the key (``unique_key``, else the contract's
      ``Config.unique``) has no duplicate; skipped when there is no key.

    Both come from one op that reads the table once with ``read_table(lake)``
    (the check requires the ``lake`` resource). ``blocking`` stops downstream
    assets of the same run when a check fails.

    ``read_partitions(lake, partition_keys, key)``, for a table that grows by
    partition (the stream's batches), scopes a partitioned run's checks to what it
    wrote: it returns the rows those partitions wrote (validated against every rule)
    and the table's rows sharing a key with them as ``SharedKeys`` (see
    ``rows_sharing_keys``; a duplicate of an older row still shows). Memory and time
    then follow the batch, not the table. Runs without a partition check the whole table.
    """
    key = dg.AssetKey.from_coercible(asset_key)
    table_key = list(unique_key) if unique_key is not None else contract_key(contract)
    contract_name = contract_check_name(contract)
    unique_name = unique_key_check_name(contract)
    specs = [
        dg.AssetCheckSpec(
            name=contract_name,
            asset=key,
            blocking=blocking,
            description=f"Every row of {contract_table(contract)} satisfies the {contract.__name__} contract "
            "(types, nullability, value ranges), validated eagerly on the whole table.",
        )
    ]
    if table_key:
        specs.append(
            dg.AssetCheckSpec(
                name=unique_name,
                asset=key,
                blocking=blocking,
                description=f"({', '.join(table_key)}) identifies one row of {contract_table(contract)}.",
            )
        )

    @dg.multi_asset_check(
        name=f"contract_checks__{'__'.join(key.path)}",
        specs=specs,
        required_resource_keys={"lake"},
        description=f"Contract checks of {key.to_user_string()} generated from {contract.__name__}.",
    )
    def _checks(context):  # (a string annotation, from __future__, is rejected by Dagster)
        lake = context.resources.lake.get_lake()
        partitions = run_partition_keys(context) if read_partitions is not None else None
        if partitions:
            df, keys = read_partitions(lake, partitions, table_key)
            scope = {"scope": f"rows written by {len(partitions)} partition(s): {partitions[0]}..{partitions[-1]}"}
        else:
            df = read_table(lake)
            keys = SharedKeys.of_frame(df, table_key)
            scope = {"scope": "whole table"}
        result = contract_check_result(df, contract, check_name=contract_name, check_unique=not table_key)
        yield with_metadata(result, scope)
        if table_key:
            result = unique_key_check_result(keys, table_key, check_name=unique_name)
            yield with_metadata(result, scope)

    return [_checks]
