from oms_ops.api.server import main

raise SystemExit(main())
