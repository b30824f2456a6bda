from eat.cli import main

raise SystemExit(main())
