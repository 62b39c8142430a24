from dupstream.cli import main

raise SystemExit(main())
