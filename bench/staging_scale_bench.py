"""Staging memory and speed as the file grows: 1M, 10M and 30M rows, against DuckDB and pyarrow.

What is measured
    For each size, three children of ``bench/staging_bench.py`` (``--worker``), each its own
    process, on the same file in the same run: ``pyarrow`` (plain streaming CSV → Parquet, no
    validation), ``duckdb`` (typed ``read_csv`` → Parquet with the contract's declared types,
    2 threads, bad rows skipped) and ``platform`` (the engine with the real ``mobility.yellow_trips``
    contract: typing, every rule, quarantine with reasons and line numbers). Wall time is the
    work alone; peak RSS is each child's own ``VmHWM`` (interpreter and imports included).

Files
    1M and 10M rows are the generated files ``staging_bench.py`` and ``dbt_bench.py`` share
    (``cli.generate.trips``, seed 7, 0.1 % planted faults). The 30M file is the 10M file's data
    written three times under one header (``yellow_tripdata_bench_30000000_x3.csv``, 2.8 GB):
    generating 30M fresh rows would take a quarter of an hour and measure nothing more, since the
    engine keeps no state across rows when the contract has no unique key.

Targets (reported, not asserted): the platform's peak RSS ≤ 0.5 GiB at every size and flat
(largest ÷ smallest ≤ 1.15); its wall time within 1.3× DuckDB's at every size.

Usage (from the repository root)::

    python bench/staging_scale_bench.py                 # 1M, 10M, 30M
    python bench/staging_scale_bench.py --sizes 1000000 # one size

Writes ``bench/out/staging_scale_bench.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import staging_bench as sb  # noqa: E402

SIZES = (1_000_000, 10_000_000, 30_000_000)
APPROACHES = ("pyarrow", "duckdb", "platform")
GENERATED_UP_TO = 10_000_000  # larger files repeat the 10M file's data
FLAT = 1.15
MIB = 1 << 20


def ensure_file(rows: int, out_dir: Path) -> Path:
    if rows <= GENERATED_UP_TO:
        return sb.ensure_csv(rows, out_dir)[0]
    if rows % GENERATED_UP_TO:
        raise SystemExit(f"--sizes: above {GENERATED_UP_TO:,} rows, a multiple of it (the 10M file repeated)")
    times = rows // GENERATED_UP_TO
    path = out_dir / f"yellow_tripdata_bench_{rows}_x{times}.csv"
    base = sb.ensure_csv(GENERATED_UP_TO, out_dir)[0]
    want = base.stat().st_size * times - (times - 1) * _header_bytes(base)
    if path.exists() and path.stat().st_size == want:
        return path
    print(f"writing {path} ({times} × {base.name}) ...", file=sys.stderr, flush=True)
    tmp = path.with_suffix(".partial")
    with open(base, "rb") as src, open(tmp, "wb") as out:
        header = src.readline()
        out.write(header)
        for _ in range(times):
            src.seek(len(header))
            shutil.copyfileobj(src, out, 16 * MIB)
    tmp.replace(path)
    return path


def _header_bytes(path: Path) -> int:
    with open(path, "rb") as f:
        return len(f.readline())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    p.add_argument("--out-dir", type=Path, default=sb.OUT_DIR)
    p.add_argument("--repeat", type=int, default=1, help="runs of each; the fastest is kept, with the largest peak")
    args = p.parse_args(argv)
    out_dir = args.out_dir.resolve()
    block_size = sb.engine_block_size()
    rows_out: list[dict[str, Any]] = []
    for size in args.sizes:
        path = ensure_file(size, out_dir)
        records = sb.count_rows(path)  # also warms the page cache, for every approach alike
        for approach in APPROACHES:
            work = out_dir / f"work_scale_{approach}"
            runs = []
            for i in range(args.repeat):
                print(f"{size:,} rows: {approach} ({i + 1}/{args.repeat}) ...", file=sys.stderr, flush=True)
                shutil.rmtree(work, ignore_errors=True)
                runs.append(sb.run_child(approach, path, work, sys.executable, block_size))
                shutil.rmtree(work, ignore_errors=True)
                print(f"  {runs[-1]['seconds']:.1f} s, peak {runs[-1]['peak_rss_bytes'] / MIB:,.0f} MiB",
                      file=sys.stderr, flush=True)
            best = min(runs, key=lambda r: r["seconds"])
            rows_out.append({"rows": records, "bytes": path.stat().st_size, "approach": approach,
                             "seconds": best["seconds"], "rows_per_second": records / best["seconds"],
                             "peak_rss_mib": max(r["peak_rss_bytes"] for r in runs) / MIB,
                             "rows_staged": best["rows_staged"], "rows_quarantined": best["rows_quarantined"],
                             "runs_seconds": [r["seconds"] for r in runs]})
    by = {(r["rows"], r["approach"]): r for r in rows_out}
    sizes = sorted({r["rows"] for r in rows_out})
    lines = ["| rows | CSV | approach | wall (s) | rows/s | peak RSS (MiB) | staged / quarantined | vs DuckDB |",
             "|---:|---:|---|---:|---:|---:|---:|---:|"]
    for r in rows_out:
        duck = by[(r["rows"], "duckdb")]["seconds"]
        lines.append(f"| {r['rows']:,} | {r['bytes'] / 1e9:.2f} GB | {r['approach']} | {r['seconds']:.1f} | "
                     f"{r['rows_per_second']:,.0f} | {r['peak_rss_mib']:,.0f} | "
                     f"{r['rows_staged']:,} / {r['rows_quarantined']:,} | {r['seconds'] / duck:.2f}× |")
    peaks = [by[(n, "platform")]["peak_rss_mib"] for n in sizes]
    ratios = [by[(n, "platform")]["seconds"] / by[(n, "duckdb")]["seconds"] for n in sizes]
    targets = [
        ("platform peak RSS ≤ 512 MiB at every size", f"{max(peaks):,.0f} MiB", max(peaks) <= 512),
        (f"platform peak RSS flat (largest ÷ smallest ≤ {FLAT})", f"{max(peaks) / min(peaks):.2f}",
         max(peaks) / min(peaks) <= FLAT),
        ("platform wall ≤ 1.3× DuckDB at every size", f"{max(ratios):.2f}×", max(ratios) <= 1.3),
    ]
    lines += ["", "| target | measured | met |", "|---|---:|:---:|"]
    lines += [f"| {t} | {m} | {'yes' if ok else '**no**'} |" for t, m, ok in targets]
    table = "\n".join(lines)
    print(table)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "staging_scale_bench.json").write_text(json.dumps({
        "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "cpus": os.cpu_count(),
        "block_size": block_size, "versions": sb.versions(("pyarrow", "polars", "duckdb", "pandera")),
        "results": rows_out, "targets": [{"target": t, "measured": m, "met": ok} for t, m, ok in targets],
        "markdown": table,
    }, indent=2) + "\n")


if __name__ == "__main__":
    main()
