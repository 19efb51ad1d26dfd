from monitor.dashboards.cli import main

raise SystemExit(main())
