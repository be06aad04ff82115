from sdstudio.cli import main

raise SystemExit(main())
