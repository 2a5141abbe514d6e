from work_server.cli import main

raise SystemExit(main())
