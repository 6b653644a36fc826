"""Pure parts of the broker's web layer and logs: byte ranges, rate limits, log lines, leaves."""

from __future__ import annotations

import io
import json
import logging

import pytest

from broker.logs import REQUEST_ID, JsonFormatter
from broker.web.limits import RateLimiter, RateLimitExceeded
from broker.web.params import byte_range
from protocol import auditlog, codec
from protocol.errors import InvalidField


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=0-99", (0, 100)),
        ("bytes=100-", (100, 1000)),
        ("bytes=-10", (990, 1000)),
        ("bytes=-5000", (0, 1000)),
        ("bytes=900-5000", (900, 1000)),
        ("bytes=5-1", None),
        ("bytes=0-1,5-6", None),
        ("items=0-1", None),
        ("bytes=-", None),
    ],
)
def test_byte_ranges_follow_rfc_9110(header: str | None, expected: tuple[int, int] | None) -> None:
    assert byte_range(header, 1000) == expected


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=2000-3000", "bytes=-0"])
def test_unsatisfiable_ranges_are_refused(header: str) -> None:
    with pytest.raises(ValueError, match="range"):
        byte_range(header, 1000)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-" + "9" * 19, (0, 1000)),
        ("bytes=-" + "9" * 19, (0, 1000)),
        ("bytes=๑-๙", None),  # Thai digits are not DIGIT: the header is ignored
        ("bytes=0-99", (0, 100)),
    ],
)
def test_positions_up_to_19_digits_are_ranges(header: str, expected: tuple[int, int] | None) -> None:
    assert byte_range(header, 1000) == expected


def test_a_start_of_19_digits_is_unsatisfiable_not_absurd() -> None:
    with pytest.raises(ValueError, match="range"):
        byte_range("bytes=" + "9" * 19 + "-", 1000)


@pytest.mark.parametrize(
    "header",
    ["bytes=0-" + "9" * 20, "bytes=0-" + "9" * 5000, "bytes=-" + "1" * 4301, "bytes=" + "0" * 20 + "-"],
)
def test_positions_of_thousands_of_digits_are_an_invalid_field(header: str) -> None:
    with pytest.raises(InvalidField) as caught:
        byte_range(header, 1000)
    assert (caught.value.status, caught.value.field) == (400, "Range")


def test_the_rate_limiter_allows_a_burst_then_the_steady_rate() -> None:
    limiter = RateLimiter(per_minute=60, burst=3)
    for _ in range(3):
        limiter.take("TH-ATPD", 100.0)
    with pytest.raises(RateLimitExceeded) as refused:
        limiter.take("TH-ATPD", 100.0)
    assert refused.value.retry_after_seconds == 1
    limiter.take("LA-MOLSW", 100.0)
    limiter.take("TH-ATPD", 101.0)
    with pytest.raises(RateLimitExceeded):
        limiter.take("TH-ATPD", 101.5)


def test_log_lines_are_json_with_the_request_id_and_never_bytes() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("casebridge.test.logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    token = REQUEST_ID.set("request-0001")
    try:
        logger.info("envelope_accepted", extra={"recipient": "ນາງ ສົມພອນ", "bytes": 5, "key": b"\x01secret"})
    finally:
        REQUEST_ID.reset(token)
        logger.removeHandler(handler)
    line = json.loads(stream.getvalue())
    assert line["event"] == "envelope_accepted"
    assert line["request_id"] == "request-0001"
    assert line["recipient"] == "ນາງ ສົມພອນ"
    assert "key" not in line
    assert line["dropped_fields"] == ["key"]
    assert "secret" not in stream.getvalue()


def test_log_times_stay_right_across_seconds_and_out_of_order_records() -> None:
    formatter = JsonFormatter()
    times = []
    for created in (1_767_225_600.25, 1_767_225_600.75, 1_767_225_601.5, 1_767_225_599.0):
        record = logging.LogRecord("casebridge.test", logging.INFO, "", 0, "ส่งต่อ", (), None)
        record.created = created
        record.msecs = (created - int(created)) * 1000
        times.append(json.loads(formatter.format(record))["time"])
    assert times == [
        "2026-01-01T00:00:00.250Z",
        "2026-01-01T00:00:00.750Z",
        "2026-01-01T00:00:01.500Z",
        "2025-12-31T23:59:59.000Z",
    ]


def test_audit_leaves_are_canonical_arrays_with_their_kind() -> None:
    leaf = auditlog.encode_leaf(
        1_767_225_600,
        auditlog.EnvelopeAccepted(
            envelope_id=b"\x01" * 16,
            envelope_hash=b"\x02" * 32,
            sender_id="TH-ATPD",
            sender_key_id=b"\x03" * 16,
            recipients=("LA-MOLSW",),
            header_length=443,
            part_lengths=(337,),
            expires_at=1_768_435_200,
            sender_signature=b"\x04" * 64,
        ),
    )
    assert auditlog.leaf_kind(leaf) is auditlog.LeafKind.ENVELOPE_ACCEPTED
    assert codec.decode(leaf)[:3] == [1, "envelope_accepted", 1_767_225_600]
