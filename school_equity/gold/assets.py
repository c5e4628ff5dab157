"""Gold: the dbt project as Dagster assets.

Two `@dbt_assets`, one per partitioning scheme:
- the stream models (`tag:stream`), partitioned like Bronze and Silver by the sensor's
  `survey_batches`; a run over any range of batches is one `dbt build` over the
  half-open batch window of that range;
- everything else (equity models, seeds, snapshots), unpartitioned, rebuilt whole.

dbt sources carry `meta.dagster.asset_key` (the Silver keys), so Silver -> Gold is one
graph; dbt tests become asset checks (dagster-dbt's default, enable_asset_checks=True).
Both definitions share the `duckdb_warehouse` pool: DuckDB takes one writer per file, so
two runs must never build the warehouse at once (the pool's limit of 1 is set in the
instance, see school_equity/dagster_home/dagster.yaml).
"""

import contextlib
import importlib.metadata
import os
import re
import shutil
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import (
    DagsterDbtTranslator,
    DagsterDbtTranslatorSettings,
    DbtCliInvocation,
    DbtCliResource,
    DbtProject,
    dbt_assets,
)
from dagster_dbt.core.dbt_event_iterator import DbtEventIterator
from packaging.version import Version
from pydantic import PrivateAttr

from school_equity.gold import warm_dbt
from school_equity.gold.project import dbt_project
from school_equity.gold.window import batch_window_env, batch_window_vars
from school_equity.kafka.partitions import survey_batches
from school_equity.lake import release_arrow_memory
from school_equity.settings import Settings

GOLD_GROUP = "gold"
GOLD_OWNERS = ["team:analytics"]
STREAM_SELECT = "tag:stream"
DUCKDB_POOL = "duckdb_warehouse"
# DuckDB names a file's catalog after the file, and dbt's relation names (in the manifest
# Dagster loads, parsed with profiles.yml's default path) include it: a warehouse file
# with another name would make every row count and column schema query miss its table.
WAREHOUSE_FILE_STEM = "warehouse"
PARTIAL_PARSE_FILE = "partial_parse.msgpack"
# dbt resources that Gold builds; sources are not among them (they keep their Silver keys).
GOLD_RESOURCE_TYPES = frozenset({"model", "seed", "snapshot"})
# dagster-dbt gives every invocation its own target folder, `<op>-<run id[:7]>-<random[:7]>`
# (manifest, partial parse state, graph, dbt.log: ~2.7 MB for this project), and never
# removes one: at a batch every 20 s that was 11 GB a day. Gold keeps the newest few of
# each op (the logs of the latest builds) and removes the rest after each build.
DBT_TARGETS_KEEP = 20
DBT_TARGETS_KEEP_ENV = "SCHOOL_EQUITY_DBT_TARGETS_KEEP"
# 0 turns off the dbt process each run starts ahead of its first build (warm_dbt.py):
# ~110 MiB held from the run's start until that build, against ~2.5 s of dbt's import
DBT_PREWARM_ENV = "SCHOOL_EQUITY_DBT_PREWARM"
# a folder touched this recently is never removed, whatever its rank (an invocation outside
# the warehouse pool, e.g. a `dg.materialize` in a notebook, may still be writing it)
TARGET_MIN_AGE_S = 600.0
_INVOCATION_FOLDER = re.compile(r"(?P<op>.+)-[0-9a-f]{7}-[0-9a-f]{7}")


class GoldDbtTranslator(DagsterDbtTranslator):
    """Gold's naming and ownership, decided here once for every dbt model, seed and snapshot."""

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        # The key lives here rather than in get_asset_spec because dagster-dbt 0.29 also
        # reads keys straight from get_asset_key (observations for tests that dbt's indirect
        # selection ran, the freshness builder): both paths must agree on `gold/<name>`.
        if dbt_resource_props["resource_type"] in GOLD_RESOURCE_TYPES:
            return dg.AssetKey([GOLD_GROUP, dbt_resource_props["name"]])
        return super().get_asset_key(dbt_resource_props)

    def get_asset_spec(
        self, manifest: Mapping[str, Any], unique_id: str, project: DbtProject | None
    ) -> dg.AssetSpec:
        spec = super().get_asset_spec(manifest, unique_id, project)
        props = self.get_resource_props(manifest, unique_id)
        if props["resource_type"] not in GOLD_RESOURCE_TYPES:
            return spec
        warehouse = manifest.get("metadata", {}).get("adapter_type") or "duckdb"
        return spec.replace_attributes(
            group_name=GOLD_GROUP,
            owners=GOLD_OWNERS,
            kinds={"dbt", warehouse},
        )


TRANSLATOR = GoldDbtTranslator(DagsterDbtTranslatorSettings(enable_code_references=True))


class GoldDbtResource(DbtCliResource):
    """The dbt CLI for Gold, with where this deployment keeps the lake and the warehouse.

    profiles.yml and the source definitions read SCHOOL_EQUITY_LAKE / SCHOOL_EQUITY_WAREHOUSE
    through env_var(); dagster-dbt hands dbt a copy of this process's environment and also
    opens the warehouse in-process (row counts, column schemas), so the locations are
    exported here, once per run, from the same settings every other asset uses.
    """

    lake_root: str
    warehouse_path: str
    # dbt target folders of finished invocations kept per op (see DBT_TARGETS_KEEP)
    targets_keep: int = DBT_TARGETS_KEEP
    # start a dbt process with dbt imported when the run sets up its resources, for the
    # run's first build to take over (school_equity/gold/warm_dbt.py); needs dbt_executable
    # to be the school-equity-dbt launcher, which runs dbt itself when there is none
    prewarm: bool = True

    _warm: Any = PrivateAttr(default=None)

    @property
    def _cli_version(self) -> Version:
        # dagster-dbt learns the dbt version by running `dbt --version` (dbt's full start-up
        # plus a PyPI lookup, ~8 s of CPU here) twice per invocation: its cached_property
        # cannot cache on a frozen resource. The dbt beside this interpreter is the dbt-core
        # installed in it, so ask the package metadata instead.
        if Path(self.dbt_executable).parent == Path(sys.executable).parent:
            return Version(importlib.metadata.version("dbt-core"))
        return DbtCliResource._cli_version.func(self)  # type: ignore[attr-defined]

    def cli(self, args: Sequence[str], **kwargs: Any) -> DbtCliInvocation:
        """dagster-dbt's ``cli``, with dbt started before the in-process adapter is made.

        dagster-dbt makes its adapter (row counts, column schemas) first and starts dbt
        after: the adapter's set-up parses every macro of the project (dbt's and the
        adapter's, about 500), 1.9 s of CPU the first time in a process, which a run
        worker always is. Nothing reads the adapter before the events that follow the
        build, so here dbt starts first and the adapter is made while dbt starts up, on
        the other core. dbt's output waits in the pipe meanwhile (stdout is read only
        after this returns). The adapter's set-up changes dbt's process-wide state in
        this process only (flags, adapter registry); the dbt that builds is another
        process. It runs in this thread, in the same environment as before (inside
        ``cli``'s caller's block), and a failure is only a warning, as in dagster-dbt."""
        invocation = super().cli(args, **kwargs)  # starts dbt; no adapter yet (see below)
        if not invocation.is_fusion:
            with contextlib.chdir(invocation.project_dir):
                try:
                    invocation.adapter = DbtCliResource._initialize_dbt_core_adapter(self, args)
                except Exception:
                    dg.get_dagster_logger().warning(
                        "the dbt adapter for row counts and column schemas could not be made; "
                        "Gold assets are materialized without that metadata", exc_info=True)
        return invocation

    def _initialize_dbt_core_adapter(self, args: Sequence[str]) -> Any:
        # dagster-dbt's cli() calls this (its only caller) before it starts dbt; the
        # adapter is made after instead, by cli above
        return None

    def dbt_environment(self) -> dict[str, str]:
        return {"SCHOOL_EQUITY_LAKE": self.lake_root, "SCHOOL_EQUITY_WAREHOUSE": self.warehouse_path}

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        super().setup_for_execution(context)
        os.environ.update(self.dbt_environment())
        if self.target in (None, "local"):
            # DuckDB creates the file, not its folder (a fresh SCHOOL_EQUITY_HOME).
            Path(self.warehouse_path).parent.mkdir(parents=True, exist_ok=True)
        if self.prewarm and Path(self.dbt_executable).name == warm_dbt.LAUNCHER:
            # after the environment above: the warm process starts with it (the build's own
            # environment replaces it when the build takes the process over)
            idle_s = warm_dbt.idle_from_env()  # a bad setting fails the run, named
            try:
                self._warm = warm_dbt.start(idle_s)
            except OSError as e:  # only time is lost: the launcher runs dbt itself
                context.log.warning(f"no warm dbt process for this run's builds: {e}")
            else:
                os.environ[warm_dbt.SOCKET_ENV] = self._warm.socket_path

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        warm, self._warm = self._warm, None
        if warm is not None:
            if os.environ.get(warm_dbt.SOCKET_ENV) == warm.socket_path:
                del os.environ[warm_dbt.SOCKET_ENV]
            warm.stop()
        super().teardown_after_execution(context)


def dbt_executable() -> str:
    """The dbt next to this interpreter: `.venv/bin/dagster dev` runs without the venv on
    PATH, and a dbt found elsewhere on PATH could be another version or miss the adapters."""
    return warm_dbt.real_dbt()


def prewarm_from_env() -> bool:
    raw = os.environ.get(DBT_PREWARM_ENV, "1")
    value = raw.strip().lower()
    if value not in ("0", "1", "true", "false"):
        raise ValueError(f"{DBT_PREWARM_ENV}={raw!r}: expected 1 or 0 (true or false)")
    return value in ("1", "true")


def dbt_resource(settings: Settings) -> GoldDbtResource:
    """The `dbt` resource for an environment: its profiles.yml target is the environment's
    name (local = DuckDB file, branch/prod = Snowflake, credentials from env vars there)."""
    if settings.env == "local" and Path(settings.warehouse_path).stem != WAREHOUSE_FILE_STEM:
        raise ValueError(
            f"SCHOOL_EQUITY_WAREHOUSE={settings.warehouse_path!r}: the DuckDB file must be named "
            f"{WAREHOUSE_FILE_STEM}.duckdb (any folder); DuckDB names its catalog after the file "
            "and the dbt manifest's relation names include that catalog"
        )
    keep = os.environ.get(DBT_TARGETS_KEEP_ENV, str(DBT_TARGETS_KEEP))
    if not keep.strip().isdigit() or int(keep) < 1:
        raise ValueError(f"{DBT_TARGETS_KEEP_ENV}={keep!r}: expected a whole number of dbt target folders, at least 1")
    prewarm = prewarm_from_env()
    launcher = warm_dbt.launcher() if prewarm else None
    return GoldDbtResource(
        project_dir=dbt_project,
        dbt_executable=launcher or dbt_executable(),
        prewarm=launcher is not None,
        target=settings.env,
        lake_root=settings.lake_root,
        warehouse_path=settings.warehouse_path,
        targets_keep=int(keep),
    )


def prune_target_folders(own: Path, keep: int, *, min_age_s: float | None = None,
                         now: float | None = None) -> list[Path]:
    """Remove the target folders of earlier invocations of the same op as ``own`` (an
    invocation's folder), all but the newest ``keep`` counting ``own``; returns the removed.

    Only dagster-dbt's own folders of that op are candidates (``<op>-<7 hex>-<7 hex>``
    beside ``own``), ranked by their last write (the folder's or its dbt.log's); a folder
    written within ``min_age_s`` stays whatever its rank. ``partial_parse.msgpack`` and
    anything else in the target directory are never touched."""
    min_age_s = TARGET_MIN_AGE_S if min_age_s is None else min_age_s
    now = time.time() if now is None else now
    match = _INVOCATION_FOLDER.fullmatch(own.name)
    if match is None:
        return []  # not a folder dagster-dbt named after an op (an invocation without context)

    def last_write(p: Path) -> float:
        times = [p.stat().st_mtime]
        with contextlib.suppress(OSError):
            times.append((p / "dbt.log").stat().st_mtime)
        return max(times)

    others: list[tuple[float, Path]] = []
    for p in own.parent.iterdir():
        other = _INVOCATION_FOLDER.fullmatch(p.name)
        if p == own or other is None or other["op"] != match["op"]:
            continue
        with contextlib.suppress(OSError):  # another build's prune may remove it meanwhile
            if p.is_dir():
                others.append((last_write(p), p))
    others.sort(reverse=True)
    removed = []
    for written, p in others[max(keep - 1, 0):]:
        if now - written >= min_age_s:
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def _with_view_row_counts(invocation: DbtCliInvocation, events: Iterator[Any]) -> Iterator[Any]:
    """dagster-dbt counts rows of tables only (a view's count runs its query). On DuckDB the
    stream's views are plain projections of a source copied into the warehouse, so a count
    is one cheap scan and every Gold asset carries `dagster/row_count`. Not on Snowflake,
    where the same views read external tables over the lake: a full scan per view per batch.
    Runs after fetch_row_counts, which on DuckDB waits for dbt to exit (the file lock)."""
    adapter = invocation.adapter
    for event in events:
        if (
            adapter is not None
            and adapter.type() == "duckdb"
            and isinstance(event, (dg.Output, dg.AssetMaterialization))
            and "dagster/row_count" not in event.metadata
            and "unique_id" in event.metadata
        ):
            node = invocation.manifest["nodes"].get(event.metadata["unique_id"].value)
            if node and node.get("config", {}).get("materialized") == "view":
                try:
                    with adapter.connection_named(f"row_count_{node['unique_id']}"):
                        _, table = adapter.execute(f"select count(*) from {node['relation_name']}", fetch=True)
                    row_count = dg.MetadataValue.int(int(table[0][0]))
                    event = event.with_metadata({**event.metadata, "dagster/row_count": row_count})
                except Exception as e:  # metadata only: never fail a successful build over it
                    dg.get_dagster_logger().warning(f"row count of {node['unique_id']} failed: {e}")
        yield event


@contextlib.contextmanager
def _environ(extra: Mapping[str, str]) -> Iterator[None]:
    """``extra`` in os.environ for the block: dagster-dbt hands the dbt process a copy of
    this process's environment when it starts it, inside ``cli()``."""
    saved = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _keep_partial_parse(invocation: DbtCliInvocation) -> None:
    """Make this build's parse state the one the next invocation starts from.

    dagster-dbt copies ``target/partial_parse.msgpack`` into each invocation's own target
    folder, and dbt updates only that copy. The project's file comes from `dbt parse` at
    set-up, with another profile (warehouse path, target) than a run's, so every build
    re-parsed the whole project (3 s of a small batch's 12 s Gold step). Replaced
    atomically (two runs may finish at once; either state is valid, dbt re-checks every
    file against it). A read-only project (a packaged image) keeps its file."""
    built = Path(invocation.target_path) / PARTIAL_PARSE_FILE
    if not built.exists():
        return
    dest = Path(invocation.project_dir) / os.environ.get("DBT_TARGET_PATH", "target") / PARTIAL_PARSE_FILE
    tmp = dest.with_name(f".{PARTIAL_PARSE_FILE}.{os.getpid()}.tmp")
    try:
        shutil.copyfile(built, tmp)
        os.replace(tmp, dest)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        dg.get_dagster_logger().debug(f"dbt's partial parse state not kept for the next build: {e}")


def _build(context: dg.AssetExecutionContext, dbt: DbtCliResource, args: list[str],
           env: Mapping[str, str] | None = None) -> Iterator[Any]:
    # This process waits while dbt runs: what earlier steps' Arrow buffers left behind
    # would sit beside dbt's own memory for the whole build.
    release_arrow_memory()
    with _environ(env or {}):
        invocation = dbt.cli(["build", *args], context=context)
    try:
        stream = invocation.stream()
        if invocation.adapter is not None and invocation.adapter.type() == "duckdb":
            # dagster-dbt holds DuckDB's events until dbt exits (the file lock) and meanwhile
            # its metadata threads poll in a loop without sleeping: on two cores that took a
            # core from dbt for the whole build. Waiting here first costs nothing more.
            stream = DbtEventIterator(iter(list(stream)), dbt_cli_invocation=invocation)
            # The same loop, chained: the column pass spins while it waits for the row-count
            # pass to finish, holding the GIL its query threads need (stream batch on a
            # 30k-event warehouse: 4.1-4.8 s chained, 0.13 + 1.05 s one after the other).
            # So each pass starts from the finished list of the one before.
            stream = DbtEventIterator(iter(list(stream.fetch_row_counts())), dbt_cli_invocation=invocation)
            events = stream.fetch_column_metadata()
        else:
            events = stream.fetch_row_counts().fetch_column_metadata()
        yield from _with_view_row_counts(invocation, iter(events))
        if invocation.is_successful():
            _keep_partial_parse(invocation)
    finally:
        _release_warehouse(invocation)
        keep = getattr(dbt, "targets_keep", DBT_TARGETS_KEEP)
        try:
            removed = prune_target_folders(Path(invocation.target_path), keep)
        except OSError as e:  # housekeeping: never fail a build over it
            dg.get_dagster_logger().warning(f"earlier dbt target folders not pruned: {e}")
        else:
            if removed:
                dg.get_dagster_logger().debug(f"removed {len(removed)} earlier dbt target folder(s), kept {keep}")


def _release_warehouse(invocation: DbtCliInvocation) -> None:
    """The in-process adapter (row counts, column schemas) keeps its DuckDB database open,
    and with it the file lock, after the build: the next dbt process, or a reader in this
    process, could not open the warehouse. A run worker exits anyway; an in-process run
    (tests, `dg.materialize`) does not. dbt-duckdb holds the database in a process-wide
    environment that outlives its connections, hence the reach into `_ENV`."""
    adapter = invocation.adapter
    if adapter is None:
        return
    adapter.cleanup_connections()
    if adapter.type() == "duckdb":
        from dbt.adapters.duckdb.connections import DuckDBConnectionManager

        env = DuckDBConnectionManager._ENV
        DuckDBConnectionManager.close_all_connections()
        if env is not None:
            env.close()


@dbt_assets(
    manifest=dbt_project.manifest_path,
    project=dbt_project,
    select=STREAM_SELECT,
    name="gold_stream_dbt",
    partitions_def=survey_batches,
    backfill_policy=dg.BackfillPolicy.single_run(),
    dagster_dbt_translator=TRANSLATOR,
    pool=DUCKDB_POOL,
)
def gold_stream_models(context: dg.AssetExecutionContext, dbt: DbtCliResource):
    """The survey stream's Gold models, built for the batch window of the run's partitions."""
    window = batch_window_vars(context.partition_keys)
    context.log.info(f"batch window [{window['min_batch_seq']}, {window['max_batch_seq_exclusive']})")
    yield from _build(context, dbt, [], env=batch_window_env(context.partition_keys))


@dbt_assets(
    manifest=dbt_project.manifest_path,
    project=dbt_project,
    exclude=STREAM_SELECT,
    name="gold_dbt",
    dagster_dbt_translator=TRANSLATOR,
    pool=DUCKDB_POOL,
)
def gold_models(context: dg.AssetExecutionContext, dbt: DbtCliResource):
    """Every other Gold model, seed and snapshot, rebuilt whole."""
    yield from _build(context, dbt, [])


GOLD_ASSETS: list[dg.AssetsDefinition] = [gold_stream_models, gold_models]
