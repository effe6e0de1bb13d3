"""The streaming CSV summary against pandas read_csv + describe() (no I/O)."""

from __future__ import annotations

import csv
import io
import math
import warnings
from typing import Any, Callable, Dict, Iterator, Optional

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.ingestion.column_stats import describe_values
from app.ingestion.csv_summary import (
    PANDAS_NA_VALUES,
    CsvSummary,
    summarize_csv,
)
from app.ingestion.emails import DistinctDigests, clean_emails, email_digests
from app.ingestion.errors import InvalidCsv, MissingColumns


def pieces(data: bytes, size: int) -> Callable[[], Optional[bytes]]:
    chunks: Iterator[bytes] = iter([data[i : i + size] for i in range(0, len(data), size)])
    return lambda: next(chunks, None)


def summarize(data: bytes, piece_size: int = 7) -> CsvSummary:
    return summarize_csv(pieces(data, piece_size))


def pandas_reference(data: bytes) -> Dict[str, Any]:
    """What the endpoint promises, computed with pandas directly."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        df = pd.read_csv(io.BytesIO(data))
    emails = df["email"]
    present = emails.notna()
    cleaned = emails[present].astype(str).str.strip().str.lower()
    kept_index = cleaned[cleaned != ""].index
    kept = df.loc[kept_index]
    numeric = kept.drop(columns=["email"]).select_dtypes(include="number")
    with np.errstate(all="ignore"):
        summary = numeric.describe().to_dict() if len(numeric.columns) else {}
    return {
        "total_rows": len(kept),
        "unique_emails": int(cleaned.loc[kept_index].nunique()),
        "summary": summary,
    }


def close(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if math.isinf(a) or math.isinf(b):
        return a == b
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def assert_matches_pandas(data: bytes, piece_size: int = 7) -> None:
    ours = summarize(data, piece_size)
    expected = pandas_reference(data)
    assert ours.total_rows == expected["total_rows"]
    assert ours.unique_emails == expected["unique_emails"]
    assert set(ours.summary) == set(expected["summary"])
    for column, stats in ours.summary.items():
        want = expected["summary"][column]
        assert stats.count == want["count"]
        for ours_value, key in (
            (stats.mean, "mean"),
            (stats.std, "std"),
            (stats.min, "min"),
            (stats.p25, "25%"),
            (stats.p50, "50%"),
            (stats.p75, "75%"),
            (stats.max, "max"),
        ):
            assert close(ours_value, want[key]), (column, key, ours_value, want[key])


# ------------------------------------------------------------ property test
_EMAILS = ["a@x.com", " A@X.com ", "b@y.org", "B@y.org", "", "   ", "NA", "c@z.net\t"]
_NUMBER_TOKENS = st.one_of(
    st.integers(-(10**12), 10**12).map(str),
    st.floats(-1e6, 1e6, allow_nan=False).map(repr),
    st.sampled_from(["", "NA", "nan", "NULL", " 7 ", "1e3", "-0.5", "+3", ".5", "inf", "-inf"]),
)
_TEXT_TOKENS = st.text(alphabet='ab ,"\n1.', max_size=6)


@st.composite
def csv_files(draw: Any) -> bytes:
    numeric_columns = draw(st.integers(0, 3))
    text_column = draw(st.booleans())
    rows = draw(st.integers(0, 25))
    header = ["id", "name", "email"] + [f"n{i}" for i in range(numeric_columns)]
    if text_column:
        header.append("notes")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=draw(st.sampled_from(["\n", "\r\n"])))
    writer.writerow(header)
    for row_id in range(rows):
        row = [
            str(row_id),
            draw(st.sampled_from(["Ann", "Bob", "x,y", 'q"t'])),
            draw(st.sampled_from(_EMAILS)),
        ]
        row += [draw(_NUMBER_TOKENS) for _ in range(numeric_columns)]
        if text_column:
            row.append(draw(_TEXT_TOKENS))
        writer.writerow(row)
    return out.getvalue().encode()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=csv_files(), piece_size=st.integers(1, 300))
def test_summary_equals_pandas_describe_for_random_small_csvs(data: bytes, piece_size: int) -> None:
    assert_matches_pandas(data, piece_size)


# ------------------------------------------------------------ type inference
@pytest.mark.parametrize(
    "token",
    [
        " 1",
        "1 ",
        "+1",
        "1.",
        ".5",
        "-.5e-3",
        "1E+05",
        "1e",
        "e5",
        "inf",
        "+inf",
        "INF",
        "Infinity",
        "-infinity",
        "infinity ",
        " inf",
        "NAN",
        "nAn",
        "-NaN",
        "+nan",
        "1e500",
        "1e-320",
        "1_0",
        "0x1",
        "1,5",
        "  ",
        "\t1",
        "99999999999999999999",
        "True",
        "None",
        "<NA>",
        "0001",
        "1d5",
        "\u00a01",
        "18446744073709551615",
        "9223372036854775808",
        "-9223372036854775809",
    ],
)
def test_numeric_columns_are_the_ones_pandas_infers(token: str) -> None:
    rows = [f'1,a,a@x.com,"{token}"', "2,b,b@x.com,3", "3,c,c@x.com,-4"]
    data = ("id,name,email,value\n" + "\n".join(rows) + "\n").encode()
    assert_matches_pandas(data)


def test_na_values_match_the_installed_pandas() -> None:
    from pandas._libs.parsers import STR_NA_VALUES

    assert set(PANDAS_NA_VALUES) == set(STR_NA_VALUES)


def test_types_are_decided_over_all_rows_and_stats_over_kept_rows() -> None:
    # The text sits in a dropped row: pandas still reads the column as text.
    data = b"id,name,email,score\n1,a,a@x.com,1.5\n2,b,,oops\n3,c,c@x.com,2.5\n"
    result = summarize(data)
    assert result.total_rows == 2
    assert set(result.summary) == {"id"}
    assert result.summary["id"].count == 2 and result.summary["id"].mean == 2.0


def test_column_of_only_missing_values_is_numeric_with_count_zero() -> None:
    result = summarize(b"id,name,email,empty\n1,a,a@x.com,\n2,b,b@x.com,NA\n")
    empty = result.summary["empty"]
    assert empty.count == 0 and math.isnan(empty.mean)


def test_header_only_file_has_no_rows_and_no_numeric_columns() -> None:
    result = summarize(b"id,name,email,score\n")
    assert (result.total_rows, result.unique_emails, result.summary) == (0, 0, {})


def test_emails_are_stripped_and_lowercased_before_counting() -> None:
    result = summarize(b"id,name,email\n1,a, Ann@X.com\n2,b,ann@x.COM \n3,c,bob@x.com\n")
    assert result.total_rows == 3 and result.unique_emails == 2


def test_quoted_fields_may_contain_newlines_commas_and_quotes() -> None:
    data = b'id,name,email\n1,"two\nlines, ""quoted""",a@x.com\n2,b,b@x.com\n'
    assert_matches_pandas(data)


def test_utf8_bom_is_ignored() -> None:
    result = summarize(b"\xef\xbb\xbfid,name,email\n1,a,a@x.com\n")
    assert result.total_rows == 1 and "id" in result.summary


def test_rows_longer_than_a_block_are_refused() -> None:
    data = b"id,name,email\n1," + b"x" * (3 * 1024 * 1024) + b",a@x.com\n"
    with pytest.raises(InvalidCsv):
        summarize(data, 256 * 1024)


def test_missing_columns_are_named() -> None:
    with pytest.raises(MissingColumns) as caught:
        summarize(b"name,mail\nx,y\n")
    assert "id" in caught.value.message and "email" in caught.value.message


def test_non_utf8_byte_is_reported_with_its_line() -> None:
    with pytest.raises(InvalidCsv) as caught:
        summarize(b"id,name,email\n1,a,a@x.com\n2,Jos\xe9,j@x.com\n", 5)
    assert "line 3" in caught.value.message


def test_ragged_row_is_reported_with_its_row_number() -> None:
    with pytest.raises(InvalidCsv) as caught:
        summarize(b"id,name,email\n1,a,a@x.com\n2,b,b@x.com,extra\n")
    assert "Row 3" in caught.value.message


# ------------------------------------------------------------ building blocks
def test_describe_values_matches_pandas_on_mixed_integer_storage() -> None:
    values = [np.array([3, 1, 2], dtype=np.int8), np.array([2.5, -7.25])]
    expected = pd.Series([3, 1, 2, 2.5, -7.25]).describe()
    stats = describe_values(values)
    assert stats.count == 5
    for ours, key in (
        (stats.mean, "mean"),
        (stats.std, "std"),
        (stats.p25, "25%"),
        (stats.p50, "50%"),
        (stats.p75, "75%"),
        (stats.min, "min"),
    ):
        assert close(ours, expected[key])


def test_distinct_digests_count_each_digest_once_across_batches() -> None:
    distinct = DistinctDigests()
    rng = np.random.default_rng(5)
    batches = [rng.integers(0, 5000, size, dtype=np.uint64) for size in (10, 3000, 7, 2000, 1, 900)]
    for batch in batches:
        distinct.add(batch)
    assert distinct.count() == len(np.unique(np.concatenate(batches)))


def test_equal_strings_get_equal_digests_wherever_they_sit() -> None:
    strings = ["", "a", "abcdefgh", "abcdefghi", "x" * 64, "x" * 65, "x" * 300, "é@ü.de"]
    mixed = pa.array(["pad", *strings, "abcdefgh", *reversed(strings)])
    digests = email_digests(mixed.slice(1))
    first, second = digests[: len(strings)], digests[len(strings) + 1 :][::-1]
    assert list(first) == list(second)
    assert digests[len(strings)] == digests[2]
    assert len(set(first.tolist())) == len(strings)


def test_digests_tell_apart_strings_that_differ_in_any_byte_or_length() -> None:
    base = "user1234567@example.com"
    variants = [base[:i] + "#" + base[i + 1 :] for i in range(len(base))]
    variants += [base[:i] for i in range(len(base) + 1)] + [base + "m"]
    variants += ["y" * n for n in range(60, 70)] + ["y" * 69 + "z"]
    digests = email_digests(pa.array(variants))
    assert len(set(digests.tolist())) == len(set(variants))


def test_email_cleaning_of_ascii_batches_equals_the_unicode_rules() -> None:
    """ASCII batches take Arrow's ASCII kernels: same answer as str.strip().lower()."""
    ascii_chars = [chr(code) for code in range(128)]
    values = [c + "Ab" + c for c in ascii_chars] + [c for c in ascii_chars]
    cleaned = clean_emails(pa.array(values)).to_pylist()
    assert cleaned == [value.strip().lower() for value in values]
    unicode_values = values + ["\u00a0Ünïcode@X.com\u2003"]
    cleaned = clean_emails(pa.array(unicode_values)).to_pylist()
    assert cleaned == [value.strip().lower() for value in unicode_values]


def test_multi_block_file_with_changing_number_formats_matches_pandas() -> None:
    """Many 1 MiB blocks: values stored as int8/int32/scaled/float64 segments."""
    rng = np.random.default_rng(3)
    lines = [b"id,name,email,small,dec,mixed,wide"]
    for i in range(60000):
        mixed = b"%.2f" % rng.normal() if i < 30000 else b"%.5f" % rng.normal()
        wide = b"%r" % float(rng.normal() * 1e12) if i % 3 else b"%d" % i
        lines.append(
            b"%d,n%d,u%d@x.com,%d,%.3f,%s,%s"
            % (i, i, i % 997, i % 100, rng.uniform(-5, 5), mixed, wide)
        )
    data = b"\n".join(lines) + b"\n"
    assert len(data) > 3 * 1024 * 1024
    assert_matches_pandas(data, 256 * 1024)


@pytest.mark.parametrize(
    "late_token",
    [
        "+5",
        " 7",
        "9.5",
        "1e3",
        "0001",
        "-3",
        "inf",
        "abc",
        "9223372036854775807",
        "9223372036854775808",
        "-9223372036854775809",
        "18446744073709551616",
    ],
)
def test_integer_column_changed_by_a_token_in_a_later_block_matches_pandas(
    late_token: str,
) -> None:
    """Blocks after the first parse integer columns as int64 directly: a
    token that is not a plain int64 there must give pandas' answer."""
    lines = [b"id,name,email,count,flag"]
    for i in range(90000):
        count = late_token.encode() if i == 80000 else b"%d" % (i % 1000 - 300)
        lines.append(b'%d,n%d,u%d@x.com,"%s",%d' % (i, i, i % 997, count, i % 2))
    data = b"\n".join(lines) + b"\n"
    assert len(data) > 2 * 1024 * 1024
    assert_matches_pandas(data, 256 * 1024)
