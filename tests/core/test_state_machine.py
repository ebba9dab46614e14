"""The state machine: table checks, batch refusal, events, stamps, and a property test."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from oms_ops import state_machine as sm
from oms_ops.errors import IllegalTransition, NotFound, ValidationFailed
from oms_ops.invariants import check_invariants
from oms_ops.state_machine import Change, apply_transitions
from tests.core import factories as f


def test_table_is_closed_and_every_state_reachable():
    for entity, table in sm.TRANSITIONS.items():
        every = sm.states(entity)
        assert every == set(table), f"{entity}: states used as targets must have an entry (terminal: empty)"
        reachable = set(sm.INITIAL_STATES[entity])
        frontier = list(reachable)
        while frontier:
            for nxt in table[frontier.pop()]:
                if nxt not in reachable:
                    reachable.add(nxt)
                    frontier.append(nxt)
        assert reachable == every, f"{entity}: unreachable {every - reachable}"


def test_contract_minimum_order_transitions_are_allowed():
    required = {
        "new": {"allocated", "partially_allocated", "backordered", "on_hold", "cancelled"},
        "backordered": {"allocated", "partially_allocated", "on_hold", "cancelled"},
        "partially_allocated": {"allocated", "backordered", "on_hold", "cancelled"},
        "allocated": {"new", "picking", "on_hold", "cancelled"},
        "on_hold": {"new", "cancelled"},
    }
    for src, dsts in required.items():
        assert dsts <= sm.TRANSITIONS["order"][src]


def test_path_finds_shortest_legal_sequence():
    assert sm.path("order", "partially_shipped", "delivered") == ["shipped", "delivered"]
    assert sm.path("order", "delivered", "new") is None
    assert sm.path("order", "new", "new") == []


@pytest.fixture
def orders3(conn):
    f.world(conn)
    return conn, [f.order(conn) for _ in range(3)]


def test_batch_with_one_illegal_change_changes_nothing_and_names_it(orders3):
    conn, (a, b, c) = orders3
    before = conn.execute("SELECT order_id, state, updated_at FROM oms.orders ORDER BY 1").fetchall()
    n_events = conn.execute("SELECT count(*) FROM oms.order_events").fetchone()[0]
    with pytest.raises(IllegalTransition) as exc, conn.transaction():
        apply_transitions(
            conn, "order", [Change(a, "backordered"), Change(b, "shipped"), Change(c, "delivered")], actor="t"
        )
    assert exc.value.refused == [("order", b, "new", "shipped"), ("order", c, "new", "delivered")]
    assert f"order {b}: new -> shipped" in str(exc.value)
    assert conn.execute("SELECT order_id, state, updated_at FROM oms.orders ORDER BY 1").fetchall() == before
    assert conn.execute("SELECT count(*) FROM oms.order_events").fetchone()[0] == n_events


def test_accepted_changes_append_events_with_actor_reason_data(orders3):
    conn, (a, b, _) = orders3
    with conn.transaction():
        done = apply_transitions(
            conn,
            "order",
            [Change(a, "backordered", "no stock", {"rule": "r1"}), Change(b, "new")],
            actor="allocator",
        )
    assert done == [(a, "new", "backordered")]  # same-state change: no-op, no event
    ev = conn.execute(
        "SELECT entity, entity_id, from_state, to_state, actor, reason, data FROM oms.order_events "
        "WHERE order_id = %s ORDER BY event_id DESC LIMIT 1",
        (a,),
    ).fetchone()
    assert ev == ("order", a, "new", "backordered", "allocator", "no stock", {"rule": "r1"})
    assert f.events(conn, b) == [(None, "new")]


def test_unknown_ids_duplicates_and_unknown_entities(orders3):
    conn, (a, _, _) = orders3
    with pytest.raises(NotFound, match="999"), conn.transaction():
        apply_transitions(conn, "order", [Change(999, "cancelled")], actor="t")
    with pytest.raises(ValidationFailed, match="more than one change"), conn.transaction():
        apply_transitions(conn, "order", [Change(a, "cancelled"), Change(a, "on_hold")], actor="t")
    with pytest.raises(ValidationFailed, match="unknown entity"), conn.transaction():
        apply_transitions(conn, "customer", [Change(a, "x")], actor="t")
    with pytest.raises(IllegalTransition, match="new -> teleported"), conn.transaction():
        apply_transitions(conn, "order", [Change(a, "teleported")], actor="t")


def test_kpi_stamps_are_set_once_with_the_given_time(orders3):
    conn, (a, _, _) = orders3
    t1 = f.T0 + timedelta(hours=1)
    with conn.transaction():
        apply_transitions(conn, "order", [Change(a, "allocated", at=t1)], actor="t")
        apply_transitions(conn, "order", [Change(a, "new")], actor="t")
        apply_transitions(conn, "order", [Change(a, "allocated")], actor="t")
    assert conn.execute("SELECT allocated_at FROM oms.orders WHERE order_id = %s", (a,)).fetchone()[0] == t1


def test_a_batch_of_changes_is_one_lock_and_one_write_statement(orders3, monkeypatch):
    """State, stamps and events are written by ONE statement from one JSON document, whatever the batch."""
    import psycopg

    conn, ids = orders3
    sent: list[str] = []
    execute = psycopg.Connection.execute

    def spy(self, query, params=None, **kwargs):
        sent.append(query.as_string(self) if isinstance(query, sql.Composable) else str(query))
        return execute(self, query, params, **kwargs)

    monkeypatch.setattr(psycopg.Connection, "execute", spy)
    t1 = f.T0 + timedelta(hours=2)
    with conn.transaction():
        apply_transitions(
            conn,
            "order",
            [Change(i, "allocated", "why", {"n": i, "price": Decimal("9.90"), "at": t1}, at=t1) for i in ids],
            actor="t",
        )
    assert len(sent) == 2 and "FOR UPDATE" in sent[0] and "json_to_recordset" in sent[1]
    monkeypatch.undo()
    rows = conn.execute(
        """SELECT e.entity_id, e.data, o.allocated_at FROM oms.order_events e
           JOIN oms.orders o ON o.order_id = e.entity_id
           WHERE e.to_state = 'allocated' ORDER BY e.event_id"""
    ).fetchall()
    assert rows == [(i, {"n": i, "price": "9.90", "at": t1.isoformat()}, t1) for i in ids]


def test_order_events_are_append_only(orders3):
    import psycopg

    conn, _ = orders3
    with pytest.raises(psycopg.errors.RestrictViolation):
        conn.execute("UPDATE oms.order_events SET actor = 'x'")


# ---- property: random transition attempts -------------------------------------------------------------------
def _seed_entities(conn) -> dict[str, list[int]]:
    f.world(conn, skus=("SKU-1",), qty=0)
    oid = f.order(conn, [("SKU-1", 1), ("SKU-1", 2)])
    lines = f.line_ids(conn, oid)
    sh = conn.execute(
        """INSERT INTO oms.shipments (order_id, location_code, carrier_code, delivery_method)
                         VALUES (%s, 'WH-MSK', 'cdek', 'courier') RETURNING shipment_id""",
        (oid,),
    ).fetchone()[0]
    ret = conn.execute(
        "INSERT INTO oms.returns (order_id) VALUES (%s) RETURNING return_id", (oid,)
    ).fetchone()[0]
    pay = conn.execute(
        """INSERT INTO oms.payments (order_id, provider, provider_payment_id, amount, state)
                          VALUES (%s, 'p', '1', 1, 'pending') RETURNING payment_id""",
        (oid,),
    ).fetchone()[0]
    ref = conn.execute(
        """INSERT INTO oms.refunds (order_id, amount, idempotency_key)
                          VALUES (%s, 1, 'k') RETURNING refund_id""",
        (oid,),
    ).fetchone()[0]
    return {
        "order": [oid],
        "order_line": lines,
        "shipment": [sh],
        "return": [ret],
        "payment": [pay],
        "refund": [ref],
    }


def _states(conn, entity: str) -> dict[int, str]:
    schema, table, id_col = sm.TABLES[entity]
    q = sql.SQL("SELECT {}, state FROM {}").format(sql.Identifier(id_col), sql.Identifier(schema, table))
    return dict(conn.execute(q).fetchall())


ENTITIES = sorted(sm.TRANSITIONS)
attempt = st.tuples(
    st.sampled_from(ENTITIES),
    st.integers(0, 1),
    st.integers(0, 30),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(attempts=st.lists(st.lists(attempt, min_size=1, max_size=3), min_size=1, max_size=25))
def test_random_transitions_stay_inside_the_table(conn, attempts):
    f.reset(conn)
    ids = _seed_entities(conn)
    for batch in attempts:
        changes: dict[str, dict[int, str]] = {}
        for entity, idx, k in batch:
            eid = ids[entity][idx % len(ids[entity])]
            pool = sorted(sm.states(entity)) + ["bogus"]
            changes.setdefault(entity, {})[eid] = pool[k % len(pool)]
        for entity, wanted in changes.items():
            before = _states(conn, entity)
            n_events = conn.execute("SELECT count(*) FROM oms.order_events").fetchone()[0]
            legal = all(
                sm.allowed(entity, before[i], to) and to in sm.states(entity) for i, to in wanted.items()
            )
            try:
                with conn.transaction():
                    apply_transitions(conn, entity, [Change(i, to) for i, to in wanted.items()], actor="prop")
                assert legal
                after = _states(conn, entity)
                for i in before:
                    assert after[i] == wanted.get(i, before[i])
                moved = sum(1 for i, to in wanted.items() if before[i] != to)
                assert conn.execute("SELECT count(*) FROM oms.order_events").fetchone()[0] == n_events + moved
            except IllegalTransition as exc:
                assert not legal
                assert {r[1] for r in exc.refused} == {
                    i
                    for i, to in wanted.items()
                    if not (sm.allowed(entity, before[i], to) and to in sm.states(entity))
                }
                after = _states(conn, entity)
                assert after == before
                assert conn.execute("SELECT count(*) FROM oms.order_events").fetchone()[0] == n_events
    assert [v for v in check_invariants(conn) if v.invariant == "state_in_transition_table"] == []
