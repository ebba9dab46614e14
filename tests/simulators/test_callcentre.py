"""The call centre's order-entry feed: operators' orders over HTTP with a cursor, across restarts too."""

import shutil

import pytest

from simulators import start_simulators

FEED = "/callcentre/v1/orders"


@pytest.fixture
def centre(make_stack, client):
    stack = make_stack(only=["callcentre"], rate=4.0, profile="steady")
    return stack, stack.urls["callcentre"], {"X-Api-Key": stack.credentials["callcentre"]["api_key"]}


def read_feed(client, url, headers, cursor=None, limit=7) -> tuple[list[dict], str | None]:
    """Every order after ``cursor``, page by page, as a client storing ``next_cursor`` does."""
    orders = []
    while True:
        params = {"limit": limit} | ({"after": cursor} if cursor else {})
        page = client.get(url + FEED, headers=headers, params=params)
        assert page.status_code == 200, page.text
        body = page.json()
        orders += body["orders"]
        cursor = body["next_cursor"]
        if not body["has_more"]:
            return orders, cursor


def test_operators_orders_are_read_once_each_in_entry_order(centre, client):
    stack, url, headers = centre
    stack.advance(30 * 60)
    first, cursor = read_feed(client, url, headers)
    assert 80 < len(first) < 160  # 4 a minute for half an hour
    assert len({o["external_id"] for o in first}) == len(first)
    assert [o["entered_at"] for o in first] == sorted(o["entered_at"] for o in first)
    assert {o["channel"] for o in first} == {"callcentre"} and all(o["lines"] for o in first)
    assert read_feed(client, url, headers, cursor)[0] == []  # nothing new yet
    stack.advance(10 * 60)
    more, _ = read_feed(client, url, headers, cursor)
    assert more and not {o["external_id"] for o in more} & {o["external_id"] for o in first}
    assert all(o["entered_at"] > first[-1]["entered_at"] for o in more)
    one = client.get(f"{url}{FEED}/{more[0]['external_id']}", headers=headers).json()["order"]
    assert one == more[0]


def test_feed_needs_the_key_and_valid_paging(centre, client):
    stack, url, headers = centre
    stack.advance(600)
    assert client.get(url + FEED).status_code == 401
    assert client.get(url + FEED, headers={"X-Api-Key": "wrong"}).json()["error"]["code"] == "unauthenticated"
    for params in ({"limit": 0}, {"limit": 501}, {"after": "x"}, {"after": -1}):
        r = client.get(url + FEED, headers=headers, params=params)
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_argument"
    assert client.get(f"{url}{FEED}/CC-NOPE", headers=headers).status_code == 404


def test_duplicate_fault_steps_the_cursor_back_and_malformed_spares_the_state(centre, client):
    stack, url, headers = centre
    stack.advance(30 * 60)
    clean, _ = read_feed(client, url, headers, limit=500)
    client.post(url + "/_sim/faults", json={"kind": "duplicate", "probability": 1.0, "share": 0.1})
    seen, cursor = [], None
    for _ in range(100):
        params = {"limit": 10} | ({"after": cursor} if cursor else {})
        body = client.get(url + FEED, headers=headers, params=params).json()
        seen += body["orders"]
        cursor = body["next_cursor"]
        if not body["has_more"]:
            break
    assert len(seen) > len(clean)  # records came twice …
    assert {o["external_id"] for o in seen} == {o["external_id"] for o in clean}  # … and none was lost
    client.post(
        url + "/_sim/faults", json={"faults": [{"kind": "malformed", "probability": 1.0, "share": 0.2}]}
    )
    garbled = client.get(url + FEED, headers=headers, params={"limit": 50}).json()["orders"]
    assert any("external_id" not in o or any(ln["qty"] == "два" for ln in o["lines"]) for o in garbled)
    client.delete(url + "/_sim/faults")
    assert client.get(url + FEED, headers=headers, params={"limit": 50}).json()["orders"] == clean[:50]


def test_feed_goes_on_after_a_restart_clean_or_not(tmp_path, client):
    state = tmp_path / "sims"
    kw = dict(manual=True, seed=3, rate=4.0, n_skus=40, only=["callcentre"], profile="steady",
              state_dir=state, persist=True)  # fmt: skip

    def session(stack):
        return stack.urls["callcentre"], {"X-Api-Key": stack.credentials["callcentre"]["api_key"]}

    with start_simulators(**kw) as first:
        first.advance(600)
        url, headers = session(first)
        before, cursor = read_feed(client, url, headers)
    with start_simulators(**kw) as second:  # clean stop: same orders listed, new ones after the cursor
        url, headers = session(second)
        assert read_feed(client, url, headers)[0][: len(before)] == before  # still listed, in order
        second.advance(600)
        new, cursor2 = read_feed(client, url, headers, cursor)
        assert new and not {o["external_id"] for o in new} & {o["external_id"] for o in before}
        # a crash: the state on disk is the last periodic save, and orders were entered (and read) after it
        second.save_state()
        snapshot = tmp_path / "snapshot"
        shutil.copytree(state / "state", snapshot)
        second.advance(600)
        lost, cursor3 = read_feed(client, url, headers, cursor2)
        assert lost
    shutil.rmtree(state / "state")
    shutil.copytree(snapshot, state / "state")
    with start_simulators(**kw) as third:
        url, headers = session(third)
        third.advance(600)
        after_crash, _ = read_feed(client, url, headers, cursor3)  # the client's cursor from before the crash
        assert after_crash  # orders entered now are still seen by that client …
        seen = {o["external_id"] for o in before + new + lost}
        assert not {o["external_id"] for o in after_crash} & seen  # … and no id came out twice
