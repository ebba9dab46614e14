"""What `oms demo` asks of the simulated world: a steady pace, small POS drops, compressed customer delays."""

from __future__ import annotations

import json

import pytest

from oms_ops.platform.settings import ConfigError, load_settings
from oms_ops.platform.stack import demo_stream_settings
from simulators import start_simulators
from simulators.__main__ import build_parser


def test_the_demo_runs_steady_with_small_pos_drops_and_compressed_customers(tmp_path):
    demo = demo_stream_settings(load_settings({"OMS_HOME": str(tmp_path)}))
    args = build_parser().parse_args(
        [
            "--seed",
            demo["seed"],
            "--rate",
            demo["rate"],
            "--profile",
            demo["profile"],
            "--options",
            demo["options"],
        ]
    )
    assert args.profile == "steady"
    options = json.loads(args.options)
    with start_simulators(
        manual=True,
        n_skus=30,
        rate=args.rate,
        profile=args.profile,
        options=options,
        state_dir=tmp_path / "sims",
    ) as stack:
        assert stack.manifest()["profile"] == "steady"
        assert stack["pos"].drop_interval == 300  # a file per store every five minutes
        scale = float(demo["transit_scale"])
        assert stack["cdek"].transit_scale == scale and stack["wms"].transit_scale == scale
        assert (
            stack["shopify"].customer_returns.behaviour.delay_scale == scale
        )  # customers ask within minutes
        assert "callcentre" in stack.urls  # the operators' feed runs in the demo


def test_the_daily_curve_stays_an_option_and_a_wrong_profile_is_named(tmp_path):
    daily = demo_stream_settings(load_settings({"OMS_HOME": str(tmp_path), "OMS_DEMO_PROFILE": "daily"}))
    assert daily["profile"] == "daily"
    with pytest.raises(ConfigError, match="OMS_DEMO_PROFILE"):
        load_settings({"OMS_DEMO_PROFILE": "weekly"})
