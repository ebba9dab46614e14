"""Fuzz: the order lookup takes anything a browser can send.

The Lookup page cleans what was typed (``dashboards.common.clean_text_input``) and searches with
``oms_ops.queries.find_orders``; the Operations page looks an order up with ``dashboard_queries.order_brief``.
Property: whatever is typed — NUL and other control characters, lone surrogates, 1 MB of text, SQL and format
characters — cleaning and searching in every mode raises nothing (orders with hostile-but-accepted text are
in the database, so a match is possible).
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dashboards.common import clean_text_input
from oms_ops import dashboard_queries as dq
from oms_ops.queries import find_orders
from tests.fuzz.conftest import FUZZ_PURE, reset
from tests.fuzz.strategies import hostile_text, shop_order
from tests.fuzz.test_channels_fuzz import ingest

MODES = ("order_number", "external_id", "phone", "tracking_number")


def test_any_typed_search_is_answered(fuzz_conn, tally):
    reset(fuzz_conn)
    ingest(
        fuzz_conn,
        "webstore",
        [shop_order(1), {**shop_order(2), "name": "#2\t'%", "phone": "8 (916) 000-00-00"}],
    )

    @FUZZ_PURE
    @given(typed=st.one_of(hostile_text, st.text()), mode=st.sampled_from(MODES))
    def run(typed, mode):
        text, _ = clean_text_input(typed)
        find_orders(fuzz_conn, **{mode: text})
        find_orders(fuzz_conn, **{mode: text}, channel_code="webstore")
        dq.order_brief(fuzz_conn, text)
        tally.add("lookup", f"searches by {mode}")

    run()
