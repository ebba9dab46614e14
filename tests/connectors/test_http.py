"""The shared HTTP layer against a simulator: retries, Retry-After, timeouts, and the error when it gives up."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from oms_ops.channels.ozon import OzonClient
from oms_ops.channels.wildberries import WildberriesClient
from oms_ops.connectors.http import ApiError, ConnectorError, RatePacer, RetryPolicy, retry_after_seconds
from tests.connectors.conftest import FakeTime, SleepRecorder, settings_of


def test_retry_after_forms():
    assert retry_after_seconds({"retry-after": "7"}) == 7.0
    assert retry_after_seconds({"x-ratelimit-retry": "3"}) == 3.0
    now = datetime(2025, 3, 3, 12, 0, tzinfo=UTC)
    date = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert retry_after_seconds({"retry-after": date}, now) == pytest.approx(30.0)
    assert retry_after_seconds({}) is None


def test_backoff_is_capped_full_jitter():
    p = RetryPolicy(backoff_base=1.0, backoff_cap=4.0)
    for attempt in range(1, 10):
        assert 0 <= p.backoff(attempt) <= min(4.0, 2 ** (attempt - 1))


def test_pacer_sleeps_when_the_bucket_is_empty():
    clock, sleeps = FakeTime(), SleepRecorder()
    pacer = RatePacer(5.0, 2.0, clock=clock, sleep=sleeps)
    pacer.acquire()
    pacer.acquire()
    assert sleeps.calls == []
    pacer.acquire()
    assert sleeps.calls == [pytest.approx(0.2)]


def _ozon(stack, policy) -> OzonClient:
    return OzonClient.from_endpoint(settings_of(stack).endpoint("ozon"), policy=policy, rate=None)


def _list(client):
    return client.list_postings(since=datetime(2025, 1, 1, tzinfo=UTC), to=datetime(2025, 12, 1, tzinfo=UTC))


def test_429_waits_as_long_as_retry_after_says(make_stack, policy, sleeps):
    stack = make_stack(only=["ozon"], faults={"ozon": [{"kind": "rate_limit", "count": 2, "retry_after": 7}]})
    client = _ozon(stack, policy)
    assert "postings" in _list(client)
    assert sleeps.calls == [7.0, 7.0]
    assert client.retries == 2


def test_wildberries_429_honours_x_ratelimit_retry(make_stack, policy, sleeps):
    stack = make_stack(
        only=["wildberries"], faults={"wildberries": [{"kind": "rate_limit", "count": 1, "retry_after": 4}]}
    )
    client = WildberriesClient.from_endpoint(
        settings_of(stack).endpoint("wildberries"), policy=policy, rate=None
    )
    client.orders_new()
    assert sleeps.calls == [4.0]


@pytest.mark.parametrize(
    "fault",
    [{"kind": "server_error", "count": 2, "status": 502}, {"kind": "timeout", "count": 1, "delay": 1.0}],
)
def test_5xx_and_timeouts_are_retried(make_stack, policy, sleeps, fault):
    stack = make_stack(only=["ozon"], faults={"ozon": [fault]})
    policy.read_timeout = 0.3
    client = _ozon(stack, policy)
    assert "postings" in _list(client)
    assert client.retries == fault["count"]  # retried with back-off, then succeeded
    assert len(sleeps.calls) == fault["count"] and all(0 <= s <= 0.05 for s in sleeps.calls)


def test_gives_up_with_a_clear_error_naming_the_api_and_cause(make_stack, policy):
    stack = make_stack(
        only=["ozon"],
        faults={"ozon": [{"kind": "server_error", "probability": 1.0, "status": 503, "retry_after": 0}]},
    )
    client = _ozon(stack, policy)
    with pytest.raises(ConnectorError) as err:
        _list(client)
    msg = str(err.value)
    assert msg.startswith("Ozon Seller API: POST /v4/posting/fbs/list failed after 5 attempts: HTTP 503")
    assert "service unavailable" in msg


def test_4xx_is_not_retried(make_stack, policy):
    stack = make_stack(only=["ozon"])
    client = OzonClient(stack.urls["ozon"], "100500", "wrong-key", policy=policy, rate=None)
    with pytest.raises(ApiError) as err:
        _list(client)
    assert err.value.status == 403 and client.calls == 1
    assert "Invalid Api-Key" in str(err.value)
