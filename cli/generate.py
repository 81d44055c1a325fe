"""Seeded generators of realistic sample files: TLC-like trips and corporate expense lines.

Both write CSV in bounded memory (chunks of rows) and plant a small, known share of the errors
real deliveries contain, so that quarantine has something realistic to do.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

TLC_HEADER = [
    "VendorID", "tpep_pickup_datetime", "tpep_dropoff_datetime", "passenger_count", "trip_distance",
    "RatecodeID", "store_and_fwd_flag", "PULocationID", "DOLocationID", "payment_type", "fare_amount",
    "extra", "mta_tax", "tip_amount", "tolls_amount", "improvement_surcharge", "total_amount",
    "congestion_surcharge",
]
CHUNK = 500_000


def _fmt_ts(seconds: np.ndarray) -> pa.Array:
    ts = pa.array(seconds.astype("datetime64[s]"))
    return pa.compute.strftime(ts, format="%Y-%m-%d %H:%M:%S")


def trips(path: Path, rows: int, seed: int = 7, error_rate: float = 0.001,
          month: dt.date = dt.date(2024, 3, 1), *, note_rate: float | None = None, duplicate_rate: float = 0.0,
          counts: dict[str, int] | None = None) -> Path:
    """A TLC yellow-trips file of ``rows`` rows (current schema, ISO timestamps).

    ``error_rate`` of the rows carry one realistic fault: dropoff before pickup, an unknown
    zone id, a negative distance, or an unparseable timestamp.

    Variants, off by default (their draws come from generators of their own, so the trips drawn
    for a seed are the same with or without them):

    - ``note_rate``: a last column, ``trip_note``, where that share of records hold a quoted note
      over two or three lines (LF or CRLF inside the quotes, some with a comma or doubled quotes);
      a tenth of the records hold a short plain word, the others nothing. The file then has more
      lines than records.
    - ``duplicate_rate``: that share of rows are replaced by a copy of an earlier row (of the same
      chunk of 500,000 rows): a line exported twice.

    ``counts``, when given, receives what was planted: ``multiline_notes``, ``duplicated_rows`` and
    ``duplicated_clean_rows`` (copies of a row without a planted fault: what a unique key over the
    staged rows finds, when no two drawn trips collide on it)."""
    rng = np.random.default_rng(seed)
    note_rng = np.random.default_rng([seed, 1])
    dup_rng = np.random.default_rng([seed, 2])
    planted = {"multiline_notes": 0, "duplicated_rows": 0, "duplicated_clean_rows": 0}
    start = int(dt.datetime(month.year, month.month, 1, tzinfo=dt.UTC).timestamp())
    path.parent.mkdir(parents=True, exist_ok=True)
    if note_rate is None:
        with pacsv.CSVWriter(str(path), _tlc_schema(), write_options=pacsv.WriteOptions(quoting_style="none")) as w:
            for n in _chunks(rows):
                w.write_table(_duplicate_rows(dup_rng, *_trip_chunk(rng, n, start, error_rate), duplicate_rate,
                                              planted))
    else:
        # Quoted values with line breaks: Arrow's writer would quote every text column ("needed")
        # or refuse them ("none"), so the lines are joined here, the note already quoted.
        with open(path, "wb") as f:
            f.write((",".join(f'"{h}"' for h in [*TLC_HEADER, "trip_note"]) + "\n").encode())
            for n in _chunks(rows):
                table = _duplicate_rows(dup_rng, *_trip_chunk(rng, n, start, error_rate), duplicate_rate, planted)
                notes = _notes(note_rng, n, note_rate, planted)
                joined = pc.binary_join_element_wise(*table.columns, notes, ",")
                for chunk in pc.binary_join_element_wise(joined, "", "\n").chunks:  # each line + "\n"
                    f.write(_text_bytes(chunk))
    if counts is not None:
        counts.update(planted)
    return path


def _text_bytes(array: pa.Array) -> memoryview:
    """The text of a string array without nulls, its values one after the other (no copy)."""
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int64 if pa.types.is_large_string(array.type) else np.int32)
    return memoryview(array.buffers()[2])[offsets[array.offset]: offsets[array.offset + len(array)]]


def _chunks(rows: int) -> list[int]:
    return [min(CHUNK, rows - done) for done in range(0, rows, CHUNK)]


# Notes as written in the file (quoted, doubled quotes inside): LF, CRLF, or both.
MULTILINE_NOTES = (
    '"Lost property: umbrella\nreturned to the driver"',
    '"Passenger asked for a receipt\r\nsent by email"',
    '"Detour, road closed\non 5th Ave"',
    '"Flight ""AA 100"" delayed\r\nwaited 20 min"',
    '"Cleaning fee\nsee photo\r\nref 2231"',
)
PLAIN_NOTES = ("ok", "airport", "receipt", "detour", "cash")
PLAIN_NOTE_SHARE = 0.1


def _notes(rng: np.random.Generator, n: int, note_rate: float, planted: dict[str, int]) -> pa.Array:
    u = rng.random(n)
    multiline = u < note_rate
    plain = ~multiline & (u < note_rate + PLAIN_NOTE_SHARE)
    code = np.full(n, len(MULTILINE_NOTES) + len(PLAIN_NOTES))  # the last choice: empty
    code[multiline] = rng.integers(0, len(MULTILINE_NOTES), int(multiline.sum()))
    code[plain] = len(MULTILINE_NOTES) + rng.integers(0, len(PLAIN_NOTES), int(plain.sum()))
    planted["multiline_notes"] += int(multiline.sum())
    return pa.array([*MULTILINE_NOTES, *PLAIN_NOTES, ""]).take(pa.array(code))


def _duplicate_rows(rng: np.random.Generator, table: pa.Table, faulty: np.ndarray, rate: float,
                    planted: dict[str, int]) -> pa.Table:
    """``rate`` of the rows replaced by a copy of an earlier original row of the chunk."""
    if not rate:
        return table
    n = table.num_rows
    copy = rng.random(n) < rate
    originals = np.flatnonzero(~copy)
    at = np.flatnonzero(copy)
    before = np.searchsorted(originals, at)  # originals preceding each copy
    at, before = at[before > 0], before[before > 0]
    source = originals[(rng.random(len(at)) * before).astype(np.int64)]
    take = np.arange(n)
    take[at] = source
    planted["duplicated_rows"] += len(at)
    planted["duplicated_clean_rows"] += int(np.count_nonzero(~np.isin(source, faulty)))
    return table.take(pa.array(take))


def _tlc_schema() -> pa.Schema:
    return pa.schema([(h, pa.string()) for h in TLC_HEADER])


def _trip_chunk(rng: np.random.Generator, n: int, start: int, error_rate: float
                ) -> tuple[pa.Table, np.ndarray]:
    """One chunk of trips, and the positions of its rows with a planted fault."""
    pickup = start + rng.integers(0, 28 * 86400, n)
    duration = rng.gamma(2.0, 420.0, n).astype(np.int64) + 30
    dropoff = pickup + duration
    distance = np.round(duration / 3600 * rng.uniform(5, 18, n), 2)
    fare = np.round(3.0 + distance * 2.5 + duration / 60 * 0.5, 1)
    payment = rng.choice([1, 2, 3, 4], n, p=[0.72, 0.25, 0.02, 0.01])
    tip = np.where(payment == 1, np.round(fare * rng.uniform(0, 0.3, n), 2), 0.0)
    refund = rng.random(n) < 0.005  # refunds are negative in real files
    fare = np.where(refund, -fare, fare)
    tolls = np.where(rng.random(n) < 0.05, 6.94, 0.0)
    extra = rng.choice([0.0, 0.5, 1.0, 2.5], n)
    congestion = np.where(rng.random(n) < 0.8, 2.5, 0.0)
    total = np.round(fare + tip + tolls + extra + 0.5 + 1.0 + congestion, 2)
    pu = rng.integers(1, 266, n)
    do = rng.integers(1, 266, n)
    pickup_s, dropoff_s = _fmt_ts(pickup), _fmt_ts(dropoff)
    distance_s = pa.array(distance).cast(pa.string())
    pu_s = pa.array(pu).cast(pa.string())
    # Plant faults: each faulty row gets one of four realistic problems.
    faulty = np.flatnonzero(rng.random(n) < error_rate)
    kind = rng.integers(0, 4, len(faulty))
    if len(faulty):
        dropoff_l, pu_l, dist_l, pick_l = (dropoff_s.to_pylist(), pu_s.to_pylist(),
                                           distance_s.to_pylist(), pickup_s.to_pylist())
        for i, k in zip(faulty.tolist(), kind.tolist(), strict=True):
            if k == 0:
                dropoff_l[i] = _fmt_ts(np.array([pickup[i] - 600])).to_pylist()[0]
            elif k == 1:
                pu_l[i] = "0"
            elif k == 2:
                dist_l[i] = "-1.5"
            else:
                pick_l[i] = "2024-02-30 25:61:00"
        dropoff_s, pu_s, distance_s, pickup_s = (pa.array(dropoff_l), pa.array(pu_l),
                                                 pa.array(dist_l), pa.array(pick_l))
    s = lambda a: pa.array(a).cast(pa.string())  # noqa: E731
    cols = [
        s(rng.choice([1, 2], n)), pickup_s, dropoff_s, s(rng.choice([1, 1, 1, 2, 3, 5], n)), distance_s,
        s(rng.choice([1, 1, 1, 1, 2, 5], n)), pa.array(np.where(rng.random(n) < 0.01, "Y", "N")),
        pu_s, s(do), s(payment), s(fare), s(extra), pa.array(["0.5"] * n), s(tip), s(tolls),
        pa.array(["1.0"] * n), s(total), s(congestion),
    ]
    return pa.table(cols, schema=_tlc_schema()), faulty


# ---------------------------------------------------------------------------------------------
# Expense reports

EXPENSE_HEADER = ["report_id", "line_number", "employee_id", "employee_email", "cost_centre",
                  "category", "amount", "currency", "expense_date", "submitted_at"]
CATEGORIES = {  # category → (typical amount, spread)
    "travel": (420.0, 0.6), "lodging": (180.0, 0.4), "meals": (38.0, 0.5),
    "ground_transport": (27.0, 0.6), "office_supplies": (45.0, 0.7), "software": (120.0, 0.8),
    "training": (650.0, 0.5), "client_entertainment": (160.0, 0.6),
}
FIRST = ["anna", "ben", "chloe", "david", "elena", "farid", "grace", "hugo", "ines", "jonas",
         "karin", "liam", "maya", "noah", "olga", "pablo", "quinn", "rosa", "sven", "tara"]
LAST = ["berg", "costa", "dubois", "eriksen", "fischer", "garcia", "hansen", "ivanova", "jensen",
        "kowalski", "larsen", "moreau", "novak", "olsen", "petit", "rossi", "schmidt", "weber"]


def expenses(path: Path, reports: int, seed: int = 11, error_rate: float = 0.02,
             day: dt.date = dt.date(2026, 11, 19)) -> Path:
    """An expense export with ``reports`` reports of 1–8 lines each.

    ``error_rate`` of the lines carry one realistic fault: an unknown category, a negative
    amount, a malformed email, an expense dated after submission, an unknown currency, or a
    line repeated from earlier in the file (duplicate key)."""
    rng = np.random.default_rng(seed)
    employees = [
        (f"E{100000 + i:06d}", f"{FIRST[i % len(FIRST)]}.{LAST[(i * 7) % len(LAST)]}{i}@example.com",
         f"CC-{1000 + (i % 23) * 10:04d}", ["EUR", "EUR", "GBP", "USD", "CHF"][i % 5])
        for i in range(400)
    ]
    rows: list[list[str]] = []
    cats = list(CATEGORIES)
    for r in range(reports):
        emp_id, email, cc, cur = employees[int(rng.integers(0, len(employees)))]
        submitted = dt.datetime.combine(day, dt.time()) + dt.timedelta(seconds=int(rng.integers(0, 86400)))
        for line in range(1, int(rng.integers(1, 9)) + 1):
            cat = cats[int(rng.integers(0, len(cats)))]
            typical, spread = CATEGORIES[cat]
            amount = max(0.5, round(float(rng.lognormal(np.log(typical), spread)), 2))
            expense_day = day - dt.timedelta(days=int(rng.integers(1, 45)))
            rows.append([f"ER-{20260000 + seed * 10000 + r:08d}", str(line), emp_id, email, cc, cat,
                         f"{amount:.2f}", cur, expense_day.isoformat(),
                         submitted.strftime("%Y-%m-%d %H:%M:%S")])
    for i in np.flatnonzero(rng.random(len(rows)) < error_rate).tolist():
        k = int(rng.integers(0, 6))
        row = rows[i]
        if k == 0:
            row[5] = "spa_treatment"
        elif k == 1:
            row[6] = f"-{row[6]}"
        elif k == 2:
            row[3] = row[3].replace("@", " at ")
        elif k == 3:
            row[8] = (day + dt.timedelta(days=3)).isoformat()
        elif k == 4:
            row[7] = "XYZ"
        elif i > 0:
            rows[i] = list(rows[i - 1])  # a line exported twice
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table({h: [r[j] for r in rows] for j, h in enumerate(EXPENSE_HEADER)})
    pacsv.write_csv(table, str(path), write_options=pacsv.WriteOptions(quoting_style="needed"))
    return path
