from t3unlearn.commands.main import main

raise SystemExit(main())
