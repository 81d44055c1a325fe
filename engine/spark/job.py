"""The Spark staging job: one landed CSV file → staged rows and quarantined rows, on Spark.

It runs in its own environment (``.venv-spark``: pyspark, pandera's pyspark backend and
dagster-pipes; see ``requirements-spark.txt``), because pandera's pyspark backend imports
``pyspark.pandas``, which does not import beside this project's pandas 3. So this file imports
nothing of the project: it receives the contract as JSON (``core.rules.portable_contract``, the
same rule descriptions the polars expressions are compiled from) and the header mapping the
driver already checked, and writes Parquet. The same file runs locally (``local[2]``) and, through
Dagster Pipes, on EMR Serverless or Glue.

Semantics follow the Arrow engine (``engine.arrow``) value for value: every column is read as
text, parsed into its type only where the text is exactly a value of it (never rounded or
coerced), with the same rule names, failed columns, original values and source line numbers.
Where Spark cannot read a file as the Arrow engine does (see :class:`NotOnSpark`), the job stops
before writing anything and says why.

Run: ``python engine/spark/job.py --request request.json --result result.json`` (no Pipes), or
under Dagster Pipes with the request in the ``request`` extra.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import operator
import os
import re
import sys
from functools import reduce
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

# core.names' system columns (this file imports nothing of the project): the driver reads Spark's
# files by these names into the staging and quarantine schemas, so a difference fails loudly.
SOURCE_FILE, SOURCE_LINE = "_source_file", "_source_line"
Q_COLUMNS, Q_RULES, Q_ERRORS, Q_RAW = "_failed_columns", "_failed_rules", "_errors", "_raw_record"
# The grammar of values (integers, decimals, booleans, sub-microsecond fractions) comes with the
# contract (core.rules.GRAMMAR); this one is Spark's own: what polars' float cast accepts.
_FLOAT = r"^[+-]?(([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?|(?i:inf|infinity|nan))$"
_WHITESPACE = r"^[\p{IsWhite_Space}]+|[\p{IsWhite_Space}]+$"  # what Rust's trim() strips
_MISSING = "\u0000missing\u0000"  # a field the record does not have (never a value in a text file)
INTEGER_TYPES = {"int16": T.ShortType(), "int32": T.IntegerType(), "int64": T.LongType()}


class NotOnSpark(Exception):  # noqa: N818 - a verdict, named as the message reads
    """A file this engine cannot read as the Arrow engine would: nothing is written."""


class Inconsistent(Exception):  # noqa: N818
    """The row split and pandera disagree: a bug in the compiled contract, reported to the driver."""


def session(app: str = "lake-staging") -> SparkSession:
    """A local session when none is configured (development and tests): two cores, no UI."""
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    builder = SparkSession.builder.appName(app)
    if not os.environ.get("SPARK_MASTER") and "spark.master" not in os.environ.get("PYSPARK_SUBMIT_ARGS", ""):
        builder = builder.master("local[2]").config("spark.ui.enabled", "false") \
            .config("spark.driver.memory", "1g").config("spark.sql.shuffle.partitions", "4")
    return (builder.config("spark.sql.session.timeZone", "UTC")
            .config("spark.sql.timestampType", "TIMESTAMP_NTZ")
            .config("spark.sql.ansi.enabled", "true")
            .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
            .getOrCreate())


# -- types -------------------------------------------------------------------------------------
_CHRONO = {"Y": "yyyy", "m": "M", "d": "d", "H": "H", "M": "m", "S": "s", "y": "yy", "b": "MMM", "B": "MMMM",
           "I": "h", "p": "a", "j": "D", "e": "d"}


def java_pattern(chrono: str) -> str:
    """A chrono format (``%Y-%m-%d %H:%M:%S%.f``) as a Spark datetime pattern. Numeric fields
    take one or two digits, as chrono's do; ``%.f`` is an optional fraction of 1 to 9 digits."""
    out, i = [], 0
    literal: list[str] = []

    def flush() -> None:
        if literal:
            text = "".join(literal).replace("'", "''")
            out.append(f"'{text}'" if re.search(r"[A-Za-z]", text) or "'" in text else text)
            literal.clear()

    while i < len(chrono):
        ch = chrono[i]
        if ch != "%":
            literal.append(ch)
            i += 1
            continue
        code = chrono[i + 1: i + 3] if chrono[i + 1: i + 2] == "." else chrono[i + 1: i + 2]
        if code == ".f":
            flush()
            out.append("[.SSSSSSSSS]")
            i += 3
            continue
        if code == "%":
            literal.append("%")
            i += 2
            continue
        if code not in _CHRONO:
            raise NotOnSpark(f"the format directive %{code} (in {chrono!r}) has no Spark equivalent")
        flush()
        out.append(_CHRONO[code])
        i += 2
    flush()
    return "".join(out)


def _spark_type(col: dict) -> T.DataType:
    name = col["type"]
    if name == "decimal":
        return T.DecimalType(col["precision"], col["scale"])
    return {"string": T.StringType(), "float64": T.DoubleType(), "boolean": T.BooleanType(),
            "date": T.DateType(), "timestamp": T.TimestampNTZType(), **INTEGER_TYPES}[name]


def _decimal_digits(text: Column, g: dict) -> tuple[Column, Column]:
    integer = F.length(F.regexp_extract(text, g["integer_digits"], 1))
    fraction = F.length(F.regexp_extract(text, g["fraction_digits"], 1))
    return integer, fraction


def _parse(col: dict, raw: Column, g: dict) -> Column:
    """The typed value of a column's text, or null where the text is no value of the type. The
    text as it is first, stripped only where that fails (Spark evaluates a coalesce lazily), as
    the Arrow engine retries only the values its first parse missed."""
    kind = col["type"]
    if kind == "string":
        return raw
    stripped = F.regexp_replace(raw, _WHITESPACE, "")
    if kind in ("timestamp", "date"):
        tries = []
        for text in (raw, stripped):
            for fmt in col["formats"]:
                if kind == "timestamp":
                    parsed = F.try_to_timestamp(text, F.lit(java_pattern(fmt)))
                    if "%.f" in fmt:
                        parsed = F.when(~text.rlike(g["sub_microsecond"]), parsed)  # chrono would drop nanoseconds
                else:
                    parsed = F.try_to_date(text, java_pattern(fmt))
                tries.append(parsed)
        return F.coalesce(*tries)
    return F.coalesce(_parse_text(col, raw, g), _parse_text(col, stripped, g))


def _parse_text(col: dict, text: Column, g: dict) -> Column:
    kind = col["type"]
    if kind == "boolean":
        low = F.lower(text)
        return F.when(low.isin(*g["true_words"]), F.lit(True)).when(low.isin(*g["false_words"]), F.lit(False))
    if kind == "decimal":
        integer, fraction = _decimal_digits(text, g)
        fits = text.rlike(g["decimal"]) & (integer <= col["precision"] - col["scale"]) & (fraction <= col["scale"])
        return F.when(fits, text.try_cast(_spark_type(col)))
    if kind in INTEGER_TYPES:
        return F.when(text.rlike(g["integer"]), text.try_cast(INTEGER_TYPES[kind]))
    low = F.lower(text)
    special = (F.when(low.rlike(r"^[+]?(inf|infinity)$"), F.lit(float("inf")))
               .when(low.rlike(r"^-(inf|infinity)$"), F.lit(float("-inf")))
               .when(low.rlike(r"^[+-]?nan$"), F.lit(float("nan"))))
    return F.when(text.rlike(_FLOAT), F.coalesce(text.try_cast(T.DoubleType()), special))


def _unparsed_rule(col: dict, raw: Column, g: dict) -> Column:
    """For text no format accepted: the rule it broke, as checks.contract names it."""
    kind, declared = col["type"], col["declared"]
    text = F.regexp_replace(raw, _WHITESPACE, "")
    as_formats = f" as {' or '.join(col['declared_formats'])}" if col["declared_formats"] else ""
    generic = F.lit(f"type({declared}{as_formats})")
    if kind in INTEGER_TYPES:
        return F.when(text.rlike(g["integer"]), F.lit(f"out_of_range({declared})")).otherwise(generic)
    if kind == "decimal":
        integer, fraction = _decimal_digits(text, g)
        number = text.rlike(g["decimal"])
        return (F.when(number & (fraction > col["scale"]), F.lit(f"scale({declared})"))
                .when(number & (integer > col["precision"] - col["scale"]), F.lit(f"precision({declared})"))
                .otherwise(generic))
    fractional = [f for f in col["formats"] if "%.f" in f] if kind == "timestamp" else []
    if fractional:
        micro = F.regexp_replace(text, r"([.,][0-9]{6})[0-9]+", "$1")
        parses = F.coalesce(*[F.try_to_timestamp(micro, F.lit(java_pattern(f))) for f in fractional]).isNotNull()
        return F.when(text.rlike(g["sub_microsecond"]) & parses, F.lit("precision(timestamp)")).otherwise(generic)
    return generic


def _literal(value: Any, spark_type: T.DataType) -> Column:
    if isinstance(value, dict) and "timestamp" in value:
        return F.lit(dt.datetime.fromisoformat(value["timestamp"])).cast(T.TimestampNTZType())
    if isinstance(value, dict) and "date" in value:
        return F.lit(dt.date.fromisoformat(value["date"]))
    return F.lit(value).cast(spark_type) if isinstance(spark_type, T.DecimalType) else F.lit(value)


def rule_ok(rule: dict, types: dict[str, T.DataType]) -> Column:
    """A rule description (core.rules.RuleSpec as JSON) as a Spark condition, true where a row
    passes; a null passes every rule but not_nullable, and a row rule over a null passes."""
    kind, params = rule["kind"], rule["params"]
    if kind == "row":
        return F.coalesce(F.expr(params[0]), F.lit(True))
    c = F.col(rule["columns"][0])
    t = types[rule["columns"][0]]
    if kind == "not_nullable":
        return c.isNotNull()
    ok = {
        "finite": lambda: ~(F.isnan(c) | c.isin(float("inf"), float("-inf"))),
        "in_range": lambda: c.between(_literal(params[0], t), _literal(params[1], t)),
        "at_least": lambda: c >= _literal(params[0], t),
        "at_most": lambda: c <= _literal(params[0], t),
        "isin": lambda: c.isin(*params),
        "str_matches": lambda: c.rlike(params[0]),
    }[kind]()
    return c.isNull() | ok


# -- reading -----------------------------------------------------------------------------------
def _numbered_lines(spark: SparkSession, uri: str) -> DataFrame:
    """The file's lines with their line numbers, all in the JVM: a line's number is the lines of
    the partitions before its own plus its place in its partition (monotonically_increasing_id
    holds the partition in its upper bits and the place in the lower 33). Partitions of one text
    file follow its byte order."""
    lines = spark.read.option("lineSep", "\n").text(uri).select(
        F.col("value").alias("text"), F.spark_partition_id().alias("_pid"),
        F.monotonically_increasing_id().alias("_mid")).cache()
    counts = sorted((r[0], r[1]) for r in lines.groupBy("_pid").count().collect())
    offsets, seen = [], 0
    for pid, n in counts:
        offsets.append((pid, seen))
        seen += n
    offset = spark.createDataFrame(offsets or [(0, 0)], "_pid INT, _offset LONG")
    place = F.col("_mid") - F.shiftleft(F.col("_pid").cast("long"), 33)
    return lines.join(F.broadcast(offset), "_pid").select(
        "text", (F.col("_offset") + place + 1).alias(SOURCE_LINE))


def _records(spark: SparkSession, req: dict) -> DataFrame:
    """Every data record of the file as its contract columns' text, with its line number.

    A record is one line here: the file is read as lines (numbered by their position) and each
    line parsed as CSV. A quoted field holding a line break, broken quoting, or bytes that are not
    UTF-8 need the Arrow engine's line-exact reader: such a file is refused (NotOnSpark)."""
    csv, n = req["csv"], req["n_fields"]
    if csv["encoding"].replace("-", "").lower() not in ("utf8", "utf8sig"):
        raise NotOnSpark(f"the {csv['encoding']} encoding (Spark reads these files as UTF-8 only here)")
    numbered = _numbered_lines(spark, req["source_uri"])
    body = numbered.where(F.col(SOURCE_LINE) > 1).withColumn("text", F.regexp_replace("text", "\r$", "")) \
        .where(F.col("text") != "")  # a blank line is no record
    q, d = csv["quote_char"], csv["delimiter"]
    quoted = F.col("text").contains(q)
    odd_quotes = (F.length("text") - F.length(F.regexp_replace("text", re.escape(q), ""))) % 2 == 1
    doubt = body.where((quoted & odd_quotes) | F.col("text").contains("\ufffd") | F.col("text").contains("\r"))
    first = doubt.select(SOURCE_LINE).orderBy(SOURCE_LINE).limit(1).collect()
    if first:
        raise NotOnSpark(f"line {first[0][0]} has a quoted field running onto the next line, broken quoting, a bare "
                         "carriage return or bytes that are not UTF-8")
    fields = [f"f{i}" for i in range(n + 1)]  # one more than the header: a record with too many fields
    schema = ", ".join(f"{f} STRING" for f in fields)
    opts = {"sep": d, "quote": q, "escape": q, "nullValue": _MISSING, "emptyValue": "", "mode": "PERMISSIVE",
            "ignoreLeadingWhiteSpace": "false", "ignoreTrailingWhiteSpace": "false", "unescapedQuoteHandling":
            "RAISE_ERROR"}
    parsed = body.select("text", SOURCE_LINE, F.from_csv("text", schema, opts).alias("r"))
    count = F.when(~quoted, F.size(F.split("text", re.escape(d), -1)))
    too_many = F.col(f"r.f{n}").isNotNull()
    too_few = F.col(f"r.f{n - 1}").isNull()
    wrong = parsed.where(too_many | too_few)
    in_quotes = wrong.where(quoted).select(SOURCE_LINE).orderBy(SOURCE_LINE).limit(1).collect()
    if in_quotes:
        raise NotOnSpark(f"line {in_quotes[0][0]} has quoted fields and the wrong number of them")
    nulls = csv["null_values"]
    columns = []
    for target, index in req["positions"].items():
        value = F.col(f"r.f{index}")
        columns.append(F.when(value.isin(*nulls), F.lit(None).cast("string")).otherwise(value).alias(target))
    for target in req["absent"]:
        columns.append(F.lit(None).cast("string").alias(target))
    return parsed.select("text", SOURCE_LINE, (too_many | too_few).alias("_structure"),
                         count.alias("_fields"), *columns)


# -- staging -----------------------------------------------------------------------------------
def stage(spark: SparkSession, req: dict) -> dict:
    contract = req["contract"]
    cols, g = contract["columns"], contract["grammar"]
    names = [c["name"] for c in cols]
    types = {c["name"]: _spark_type(c) for c in cols}
    records = _records(spark, req).cache()
    n = req["n_fields"]
    good = records.where(~F.col("_structure"))
    typed = good.select(
        SOURCE_LINE, *[F.col(c).alias(f"raw__{c}") for c in names],
        *[_parse(c, F.col(c["name"]), g).cast(types[c["name"]]).alias(c["name"]) for c in cols])
    failures = []  # (column, rule, value) per failed check, in the Arrow engine's order
    broken = []  # the same conditions as plain booleans: one cheap test per row decides
    for c in cols:
        if c["type"] == "string":
            continue
        raw = F.col(f"raw__{c['name']}")
        broken.append(raw.isNotNull() & F.col(c["name"]).isNull())
        failures.append(F.when(broken[-1], F.struct(
            F.lit(c["name"]).alias("column"), _unparsed_rule(c, raw, g).alias("rule"), raw.alias("value"))))
    unparsed = {c["name"]: F.col(f"raw__{c['name']}").isNotNull() & F.col(c["name"]).isNull()
                for c in cols if c["type"] != "string"}
    for rule in contract["rules"]:
        ok = rule_ok(rule, types)
        if rule["kind"] == "row":
            value = F.concat_ws(", ", *[F.concat(F.lit(f"{c}="), F.coalesce(F.col(f"raw__{c}"), F.lit("null")))
                                        for c in rule["columns"]])
            label = ", ".join(rule["columns"])
        else:
            label = rule["columns"][0]
            value = F.col(f"raw__{label}")
            if rule["kind"] == "not_nullable" and label in unparsed:
                ok = ok | unparsed[label]  # a value that failed to parse is reported as such, not as a null
        broken.append(~ok)
        failures.append(F.when(~ok, F.struct(F.lit(label).alias("column"), F.lit(rule["name"]).alias("rule"),
                                             value.alias("value"))))
    # The list of failures (a higher-order function, not compiled) only for the rows that fail.
    empty = F.array().cast("array<struct<column:string,rule:string,value:string>>")
    checked = typed.withColumn("_fails", F.when(reduce(operator.or_, broken), F.filter(
        F.array(*failures), lambda x: x.isNotNull())).otherwise(empty)) if failures else typed.withColumn(
        "_fails", empty)
    keys = req.get("unique_key") or []
    if keys:
        ok_rows = F.size("_fails") == 0
        complete = F.lit(True)
        for k in keys:
            complete = complete & F.col(k).isNotNull()
        w = Window.partitionBy(*keys).orderBy(SOURCE_LINE)
        first_line = F.first(F.when(ok_rows & complete, F.col(SOURCE_LINE)), ignorenulls=True).over(
            w.rowsBetween(Window.unboundedPreceding, Window.unboundedFollowing))
        key_text = F.concat_ws("|", *[F.col(k).cast("string") for k in keys])
        dup = ok_rows & complete & (F.col(SOURCE_LINE) > first_line)
        checked = checked.withColumn("_fails", F.when(dup, F.array(F.struct(
            F.lit(", ".join(keys)).alias("column"), F.lit("unique_key").alias("rule"),
            F.concat(key_text, F.lit("; first on line "), first_line.cast("string")).alias("value"))))
            .otherwise(F.col("_fails")))
    checked = checked.cache()
    staged = checked.where(F.size("_fails") == 0).select(
        *names, F.lit(req["source_name"]).alias(SOURCE_FILE), SOURCE_LINE)
    # Partitions still follow the file unless the key's window shuffled them: sorting within
    # each one is then enough for line order (a global sort costs a shuffle of every row).
    staged = staged.orderBy(SOURCE_LINE) if keys else staged.sortWithinPartitions(SOURCE_LINE)
    msg = F.transform("_fails", lambda x: F.concat(x["column"], F.lit(": "), x["rule"], F.lit(" (value "),
                                                      F.coalesce(x["value"], F.lit("null")), F.lit(")")))
    # The Arrow engine's order: unreadable records, then rows that broke a rule, then repeated keys
    # (found after the pass), each in line order.
    rank = F.when(F.expr("exists(_fails, x -> x.rule = 'unique_key')"), F.lit(2)).otherwise(F.lit(1))
    pii = req.get("pii_labels") or []
    public = F.transform("_fails", lambda x: F.concat(
        x["column"], F.lit(": "), x["rule"], F.lit(" (value "),
        F.when(x["column"].isin(*pii) if pii else F.lit(False), F.lit("<pii>"))
        .otherwise(F.coalesce(x["value"], F.lit("null"))), F.lit(")")))
    bad = checked.where(F.size("_fails") > 0).select(rank.alias("_rank"), F.array_join(public, "; ").alias("_public"),
        F.lit(req["source_name"]).alias(SOURCE_FILE), SOURCE_LINE,
        F.transform("_fails", lambda x: x["column"]).alias(Q_COLUMNS),
        F.transform("_fails", lambda x: x["rule"]).alias(Q_RULES),
        F.array_join(msg, "; ").alias(Q_ERRORS),
        *[F.col(f"raw__{c}").alias(c) for c in names], F.lit(None).cast("string").alias(Q_RAW))
    found = F.concat(F.lit(f"expected {n} fields, found "), F.col("_fields").cast("string"))
    structure = records.where(F.col("_structure")).select(
        F.lit(0).alias("_rank"), found.alias("_public"), F.lit(req["source_name"]).alias(SOURCE_FILE), SOURCE_LINE,
        F.array(F.lit("*")).alias(Q_COLUMNS), F.array(F.lit("structure")).alias(Q_RULES), found.alias(Q_ERRORS),
        *[F.lit(None).cast("string").alias(c) for c in names], F.col("text").alias(Q_RAW))
    ordered = structure.unionByName(bad).orderBy("_rank", SOURCE_LINE)
    quarantined = ordered.drop("_rank", "_public")
    staged.write.mode("overwrite").parquet(req["staging_uri"])
    quarantined.write.mode("overwrite").parquet(req["quarantine_uri"])
    first = ordered.select(SOURCE_LINE, "_public").limit(req["max_examples"]).collect()
    examples = [f"line {r[0]}: {r[1]}" for r in first]
    rows_read = records.count()
    written = spark.read.parquet(req["staging_uri"])
    rows_staged = written.count()
    verdict = pandera_verdict(written.select(*names), contract, types)
    if verdict:
        raise Inconsistent(f"{req['source_name']}: pandera's pyspark schema refuses rows the row split staged "
                           f"(the compiled contract is inconsistent; nothing is published): {verdict}")
    counts = quarantined.select(F.explode(F.arrays_zip(Q_COLUMNS, Q_RULES)).alias("f")) \
        .groupBy(F.col(f"f.{Q_COLUMNS}").alias("c"), F.col(f"f.{Q_RULES}").alias("r")).count().collect()
    newest = None
    if req.get("event_time") and rows_staged:
        value = spark.read.parquet(req["staging_uri"]).agg(F.max(req["event_time"])).collect()[0][0]
        newest = value.isoformat() if value is not None else None
    duplicates = checked.where(F.expr("exists(_fails, x -> x.rule = 'unique_key')")).count() if keys else 0
    return {"rows_read": rows_read, "rows_staged": rows_staged, "rows_quarantined": rows_read - rows_staged,
            "violations": {f"{r['c']}: {r['r']}": r["count"] for r in counts}, "duplicates": duplicates,
            "newest_event_time": newest, "examples": examples}


def pandera_verdict(staged: DataFrame, contract: dict, types: dict[str, T.DataType]) -> dict:
    """pandera's pyspark backend on the staged rows: their schema (types, nullability) and every
    column rule it has a built-in check for; empty when they all pass. The row split above decides
    row by row (pandera's pyspark backend reports no failing rows); this is the second opinion
    that staged rows meet the contract, as the Arrow engine's pandera polars schema is."""
    import pandera.pyspark as pa

    builtin = {"in_range": lambda p: pa.Check.in_range(p[0], p[1]), "at_least": lambda p: pa.Check.ge(p[0]),
               "at_most": lambda p: pa.Check.le(p[0]), "isin": lambda p: pa.Check.isin(list(p)),
               "str_matches": lambda p: pa.Check.str_matches(p[0])}
    checks: dict[str, list] = {c["name"]: [] for c in contract["columns"]}
    for rule in contract["rules"]:
        if rule["kind"] in builtin and not any(isinstance(v, dict) for v in rule["params"]):
            checks[rule["columns"][0]].append(builtin[rule["kind"]](rule["params"]))
    columns = {c["name"]: pa.Column(types[c["name"]], nullable=c["nullable"], checks=checks[c["name"]])
               for c in contract["columns"]}
    schema = pa.DataFrameSchema(columns, name=contract["dataset"])
    return dict(schema.validate(staged).pandera.errors)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--request", help="a JSON file: {'requests': [...]} (without Dagster Pipes)")
    ap.add_argument("--result", help="where to write {'results': [...]}, one per request, in order")
    ap.add_argument("--pipes", choices=["file", "s3"], default="file",
                    help="under Dagster Pipes: context and messages through files (a local subprocess) or S3")
    args = ap.parse_args(argv)
    if args.request:
        with open(args.request) as f:
            requests = json.load(f)["requests"]
        results = run_all(requests)
        with open(args.result, "w") as f:
            json.dump({"results": results}, f)
        return 0
    from dagster_pipes import PipesS3ContextLoader, PipesS3MessageWriter, open_dagster_pipes

    kwargs = {}
    if args.pipes == "s3":
        import boto3

        s3 = boto3.client("s3")  # the endpoint, region and credentials of the job's environment
        kwargs = {"context_loader": PipesS3ContextLoader(s3), "message_writer": PipesS3MessageWriter(s3, interval=1)}
    with open_dagster_pipes(**kwargs) as pipes:
        requests = pipes.get_extra("requests")
        results = run_all(requests)
        for req, result in zip(requests, results, strict=True):
            pipes.log.info(f"{req['source_name']}: {json.dumps(result)}")
        pipes.report_custom_message({"results": results})
    return 0


def run_all(requests: list[dict]) -> list[dict]:
    """Stage each file in turn in one Spark session (a session costs seconds to start)."""
    spark = session()
    try:
        return [_run(spark, req) for req in requests]
    finally:
        spark.stop()


def _run(spark: SparkSession, req: dict) -> dict:
    try:
        return stage(spark, req)
    except Inconsistent as e:
        return {"inconsistent": str(e)}
    except NotOnSpark as e:
        return {"refused": f"{req['source_name']} cannot be staged on Spark as the Arrow engine would: {e}. "
                           "Nothing was written; declare `engine: arrow` for this dataset to stage it."}
    finally:
        spark.catalog.clearCache()  # what one file cached (its lines, records, checks) goes with it


if __name__ == "__main__":
    sys.exit(main())
