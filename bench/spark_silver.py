"""The Bronze -> Silver transformation written for local Spark: the baseline of the merge
benchmark (DESIGN.md: Spark is the Silver engine beyond one machine).

Same input (the batch's Bronze Parquet, the existing Silver tables' current files),
same rules in the same order as `school_equity.silver.parse.parse_payload` (first
failing rule names the reason), newest version wins by (event_time, partition,
offset), answers are exactly the winning version's. No Delta jars can be fetched
here (delta-spark's pip package has none), so Spark reads the Delta tables' current
data files (`DeltaTable.file_uris()`) and writes plain Parquet: each table is
rewritten whole, where Delta's MERGE rewrites the files it touches (with a
1M-row batch into a 1M-row table, nearly all of them).
"""

from __future__ import annotations

import os
import subprocess
import sys


def spark_session(cores: int = 2):
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    return (SparkSession.builder.master(f"local[{cores}]").appName("school_equity-bench")
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.sql.shuffle.partitions", str(cores * 2))
            # local mode: the driver's heap is the executors' too. 2g ran out in a 1M-row run
            # while caching the parsed batch (Java heap space, in the make bench run at 4b86b7a)
            .config("spark.driver.memory", "4g")
            # JDK 17's G1 gives up an allocation after 2 waits for a JNI critical section
            # (GCLocker) and throws OutOfMemoryError with heap to spare (G1 pins regions instead
            # since JDK 22, JEP 423); the same run logged "Retried waiting for GCLocker too often"
            .config("spark.driver.extraJavaOptions",
                    "-XX:+UnlockDiagnosticVMOptions -XX:GCLockerRetryAllocationCount=100")
            .config("spark.sql.session.timeZone", "UTC")
            .config("spark.sql.adaptive.enabled", "true")
            # malformed records must become NULLs the rules catch, not exceptions
            .config("spark.sql.ansi.enabled", "false")
            .getOrCreate())


def stop_jvm(spark) -> None:
    """Stop the session and end its JVM. ``SparkSession.stop()`` leaves the gateway JVM
    (about 2.6 GB resident) running until the Python process exits, which is the whole
    rest of a bench run; the benchmarks after this one should not share the machine
    with it."""
    from pyspark import SparkContext

    spark.stop()
    gateway = SparkContext._gateway
    if gateway is None:
        return
    proc = getattr(gateway, "proc", None)
    try:
        gateway.shutdown()
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:  # a JVM that ignores SIGTERM is killed
                proc.kill()
                proc.wait()
        SparkContext._gateway = None
        SparkContext._jvm = None


def quiet(spark):
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def _reference_frames(spark):
    from school_equity.contracts.stream import MAX_SURVEY_YEAR, MIN_SURVEY_YEAR, SUPPORTED_SCHEMA_VERSIONS
    from school_equity.reference import questions, school_dbns

    catalog = spark.createDataFrame(
        [(q.question_id, q.respondent_type, q.scale_min, q.scale_max, q.introduced_in_schema_version)
         for q in questions().values()],
        "q_id string, q_respondent_type string, scale_min long, scale_max long, q_version long")
    dbns = spark.createDataFrame([(d,) for d in sorted(school_dbns())], "known_dbn string")
    return catalog, dbns, (MIN_SURVEY_YEAR, MAX_SURVEY_YEAR), SUPPORTED_SCHEMA_VERSIONS


def transform(spark, bronze_files: list[str], existing: dict[str, list[str]], out_dir: str):
    """Parse, validate, dedup and merge one batch; write the three tables to `out_dir`.
    Returns the batch's frame with its reason codes, for `parity_counts` (untimed)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F
    from pyspark.sql.types import LongType, MapType, StringType, StructField, StructType

    catalog, dbns, (ymin, ymax), versions = _reference_frames(spark)
    typed = StructType([
        StructField("schema_version", LongType()), StructField("submission_id", StringType()),
        StructField("dbn", StringType()), StructField("survey_year", LongType()),
        StructField("respondent_type", StringType()), StructField("event_time", StringType()),
        StructField("answers", MapType(StringType(), LongType())),
        StructField("device", StructType([StructField("type", StringType()), StructField("os", StringType()),
                                          StructField("app_version", StringType())])),
        StructField("language", StringType()),
    ])
    b = spark.read.parquet(*bronze_files).withColumn("payload", F.col("value").cast("string"))
    b = b.withColumn("keys", F.json_object_keys("payload")).withColumn("j", F.from_json("payload", typed))

    def kind(path: str):
        # the JSON kind of a member, from the first character of its value
        first = F.regexp_extract("payload", rf'"{path}"\s*:\s*(.)', 1)
        return (F.when(first == "", F.lit("missing")).when(first == '"', "string").when(first == "{", "object")
                .when(first == "[", "array").when(first == "n", "null").when(first.isin("t", "f"), "boolean")
                .otherwise("number"))

    top = ["submission_id", "dbn", "survey_year", "respondent_type", "event_time", "answers", "device"]
    expected = {"submission_id": "string", "dbn": "string", "survey_year": "number", "respondent_type": "string",
                "event_time": "string", "answers": "object", "device": "object", "language": "string"}
    b = b.select("*", *[kind(f).alias(f"k_{f}") for f in [*top, "language", "schema_version", "type", "os",
                                                            "app_version"]])
    sv = F.col("j.schema_version")
    v2 = sv >= 2
    missing = None
    for f in top:
        cond = F.col(f"k_{f}").isin("missing", "null")
        missing = cond if missing is None else missing | cond
    missing = missing | (v2 & F.col("k_language").isin("missing", "null"))
    dev_missing = (F.col("k_type").isin("missing", "null") | F.col("k_os").isin("missing", "null")
                   | F.col("k_app_version").isin("missing", "null"))
    wrong = None
    for f in top:
        cond = F.col(f"k_{f}") != expected[f]
        wrong = cond if wrong is None else wrong | cond
    wrong = (wrong | (v2 & (F.col("k_language") != "string")) | F.col("j.survey_year").isNull()
             | F.col("j.answers").isNull() | (F.col("k_type") != "string") | (F.col("k_os") != "string")
             | (F.col("k_app_version") != "string"))
    ts = F.try_to_timestamp(F.col("j.event_time"))
    has_offset = F.col("j.event_time").rlike(r"(Z|[+-]\d\d:\d\d)$")
    reason = (
        F.when(F.col("keys").isNull(), "invalid_json")
        .when(F.col("k_schema_version").isin("missing", "null"), "missing_field")
        .when((F.col("k_schema_version") != "number") | sv.isNull(), "wrong_type")
        .when(~sv.isin(*versions), "unsupported_schema_version")
        .when(missing | dev_missing, "missing_field")
        .when(wrong, "wrong_type")
        .when(F.trim("j.submission_id") == "", "invalid_value")
        .when((F.col("j.survey_year") < ymin) | (F.col("j.survey_year") > ymax), "invalid_value")
        .when(~F.col("j.respondent_type").isin("parent", "teacher", "student"), "invalid_value")
        .when(ts.isNull() | ~has_offset, "invalid_value")
        .when(F.size("j.answers") == 0, "invalid_value")
    )
    b = b.withColumn("reason", reason).join(F.broadcast(dbns), F.col("j.dbn") == F.col("known_dbn"), "left")
    b = b.withColumn("reason", F.coalesce("reason", F.when(F.col("known_dbn").isNull(), "unknown_dbn")))

    # question rules, per answer, over the records that passed everything so far
    ans = (b.filter(F.col("reason").isNull())
           .select("partition", "offset", F.col("j.respondent_type").alias("rt"), sv.alias("sv"),
                   F.explode("j.answers").alias("question_id", "answer_value"))
           .join(F.broadcast(catalog), F.col("question_id") == F.col("q_id"), "left"))
    ans = ans.withColumn("bad", F.when(F.col("q_id").isNull() | (F.col("q_respondent_type") != F.col("rt"))
                                       | (F.col("q_version") > F.col("sv")), 2)
                         .when((F.col("answer_value") < F.col("scale_min"))
                               | (F.col("answer_value") > F.col("scale_max")), 1).otherwise(0))
    bad = ans.groupBy("partition", "offset").agg(F.max("bad").alias("bad"))
    b = (b.join(bad, ["partition", "offset"], "left")
         .withColumn("reason", F.coalesce("reason", F.when(F.col("bad") == 2, "unknown_question")
                                          .when(F.col("bad") == 1, "answer_out_of_range"))))
    b = b.cache()

    coords = [F.col("topic").alias("kafka_topic"), F.col("partition").alias("kafka_partition"),
              F.col("offset").alias("kafka_offset"), F.col("timestamp").alias("kafka_timestamp"),
              "batch_id", F.expr("cast(substring(batch_id, 2) as long)").alias("batch_seq"), "ingested_at"]
    valid = b.filter(F.col("reason").isNull()).select(
        F.col("j.submission_id").alias("submission_id"), F.col("j.dbn").alias("dbn"),
        F.col("j.survey_year").cast("int").alias("survey_year"), F.col("j.respondent_type").alias("respondent_type"),
        ts.alias("event_time"), sv.cast("short").alias("schema_version"),
        F.when(v2, F.col("j.language")).alias("language"), F.col("j.device.type").alias("device_type"),
        F.col("j.device.os").alias("device_os"), F.col("j.device.app_version").alias("app_version"),
        F.size("j.answers").cast("int").alias("answer_count"), F.col("j.answers").alias("answers"), *coords)
    newest = Window.partitionBy("submission_id").orderBy(F.desc("event_time"), F.desc("kafka_partition"),
                                                        F.desc("kafka_offset"))
    batch_win = valid.withColumn("_rn", F.row_number().over(newest)).filter("_rn = 1").drop("_rn")

    # submissions: newest version wins across the table and the batch
    subs_old = spark.read.parquet(*existing["submissions"])
    sub_cols = subs_old.columns
    merged = (subs_old.unionByName(batch_win.drop("answers"), allowMissingColumns=True)
              .withColumn("_rn", F.row_number().over(newest)).filter("_rn = 1").drop("_rn").select(*sub_cols))
    merged.write.mode("overwrite").parquet(f"{out_dir}/survey_submissions")
    merged_back = spark.read.parquet(f"{out_dir}/survey_submissions")

    # answers: for the submissions this batch won, exactly the batch version's answers
    version = ["submission_id", "event_time", "kafka_partition", "kafka_offset"]
    won = batch_win.join(merged_back.select(*version), version, "left_semi")
    new_answers = won.select("submission_id", F.explode("answers").alias("question_id", "answer_value"), "dbn",
                             "survey_year", "respondent_type", "event_time", "kafka_partition", "kafka_offset",
                             "batch_id", "batch_seq").withColumn("answer_value", F.col("answer_value").cast("short"))
    ans_old = spark.read.parquet(*existing["answers"])
    answers = (ans_old.join(won.select("submission_id"), "submission_id", "left_anti")
               .unionByName(new_answers.select(*ans_old.columns)))
    answers.write.mode("overwrite").parquet(f"{out_dir}/survey_answers")

    # quarantine: insert-only by Kafka coordinates
    q_new = b.filter(F.col("reason").isNotNull()).select(
        *coords, F.col("key").cast("string").alias("kafka_key"), F.col("payload").alias("raw_payload"),
        F.col("reason").alias("reason_code"), F.lit("").alias("reason_detail"),
        F.col("j.submission_id").alias("submission_id"))
    q_old = spark.read.parquet(*existing["quarantine"])
    quarantine = q_old.unionByName(q_new, allowMissingColumns=True).dropDuplicates(
        ["kafka_topic", "kafka_partition", "kafka_offset"])
    quarantine.write.mode("overwrite").parquet(f"{out_dir}/survey_quarantine")

    return b


def parity_counts(spark, b, out_dir: str) -> dict:
    """Row counts to compare with the project's result (outside the timer)."""
    from pyspark.sql import functions as F

    counts = {
        "batch_valid": b.filter(F.col("reason").isNull()).count(),
        "batch_quarantined": b.filter(F.col("reason").isNotNull()).count(),
        **{t: spark.read.parquet(f"{out_dir}/survey_{t}").count() for t in ("submissions", "answers", "quarantine")},
    }
    counts["reasons"] = {r["reason"]: r["count"] for r in b.filter("reason is not null").groupBy("reason").count()
                         .collect()}
    b.unpersist()
    return counts
