"""Where things live, per environment. No Dagster imports: the CLI, the producer
and the tests read the same settings as the definitions.

One switch, ``SCHOOL_EQUITY_ENV`` (local | branch | prod), picks the defaults;
every location can be overridden by its own environment variable. Secrets are
never read here: resources take them through ``dg.EnvVar``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_DIR = PACKAGE_DIR.parent
DATA_DIR = PACKAGE_DIR / "data"
SAMPLE_DIR = DATA_DIR / "public"
DBT_PROJECT_DIR = PROJECT_DIR / "dbt_project"
QUESTION_CATALOG = DBT_PROJECT_DIR / "seeds" / "dim_climate_question.csv"

ENVIRONMENTS = ("local", "branch", "prod")

# Stream defaults (see README "Batch partitions over a year")
SURVEY_TOPIC = "survey_submissions"
CONSUMER_GROUP = "school_equity.bronze"


def get_env() -> str:
    env = os.environ.get("SCHOOL_EQUITY_ENV", "local").strip().lower()
    if env not in ENVIRONMENTS:
        raise ValueError(f"SCHOOL_EQUITY_ENV={env!r}: expected one of {', '.join(ENVIRONMENTS)}")
    return env


def _default_home() -> Path:
    return Path(os.environ.get("SCHOOL_EQUITY_HOME", PROJECT_DIR / ".school_equity")).resolve()


@dataclass(frozen=True)
class Settings:
    env: str
    home: Path
    lake_root: str  # a local directory or an s3://bucket/prefix URI
    warehouse_path: str  # DuckDB file (local); ignored by Snowflake targets
    kafka_bootstrap: str
    topic: str = SURVEY_TOPIC
    consumer_group: str = CONSUMER_GROUP
    landing_dir: str = field(default="")

    @property
    def lake_is_s3(self) -> bool:
        return self.lake_root.startswith("s3://")


def load_settings() -> Settings:
    env = get_env()
    home = _default_home()
    lake_default = str(home / "lake") if env == "local" else ""
    lake_root = os.environ.get("SCHOOL_EQUITY_LAKE", lake_default)
    if not lake_root:
        raise ValueError(f"SCHOOL_EQUITY_LAKE must be set (an s3:// URI) for env {env!r}")
    return Settings(
        env=env,
        home=home,
        lake_root=lake_root.rstrip("/"),
        warehouse_path=os.environ.get("SCHOOL_EQUITY_WAREHOUSE", str(home / "warehouse.duckdb")),
        kafka_bootstrap=os.environ.get("SCHOOL_EQUITY_KAFKA", "127.0.0.1:19092"),
        topic=os.environ.get("SCHOOL_EQUITY_TOPIC", SURVEY_TOPIC),
        consumer_group=os.environ.get("SCHOOL_EQUITY_CONSUMER_GROUP", CONSUMER_GROUP),
        landing_dir=os.environ.get("SCHOOL_EQUITY_LANDING", str(home / "landing")),
    )
