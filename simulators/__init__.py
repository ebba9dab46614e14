"""API-faithful stand-ins for the systems outside the OMS (marketplaces, web store, POS, WMS, carrier).

See ``docs/simulators.md``. Public entry points:

* :func:`start_simulators` / :class:`SimulatorStack` — run them (tests, demo); ``python -m simulators`` — runner;
* :func:`generate_catalog` / :class:`Product` — the shared catalog the OMS loads too;
* :class:`OrderGenerator` / :func:`generate_orders` — reproducible order streams;
* :class:`SimClock` — simulated time; :class:`FaultRule` — fault control;
* :func:`verify_shopify_hmac` — webhook signature check for the OMS receiver;
* :func:`generate_callcentre_orders` — operator-entered orders.
"""

from oms_ops.wire.shopify import shopify_hmac, verify_shopify_hmac
from simulators.callcentre import CallCentre, generate_callcentre_orders
from simulators.catalog import Product, generate_catalog, is_valid_ean13
from simulators.clock import SimClock
from simulators.faults import FAULT_KINDS, FaultRule
from simulators.generator import GeneratedOrder, OrderGenerator, generate_orders
from simulators.stack import SIMULATOR_NAMES, SimulatorStack, start_simulators

__all__ = [
    "FAULT_KINDS",
    "SIMULATOR_NAMES",
    "CallCentre",
    "FaultRule",
    "GeneratedOrder",
    "OrderGenerator",
    "Product",
    "SimClock",
    "SimulatorStack",
    "generate_callcentre_orders",
    "generate_catalog",
    "generate_orders",
    "is_valid_ean13",
    "shopify_hmac",
    "start_simulators",
    "verify_shopify_hmac",
]
