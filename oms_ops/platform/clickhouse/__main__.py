"""``python -m oms_ops.platform.clickhouse``: run the embedded ClickHouse server (see :mod:`.cli`)."""

import sys

from oms_ops.platform.clickhouse.cli import main

sys.exit(main())
