"""`python -m imagenette_drift` is the `imagenette` command."""

from imagenette_drift.cli import main

raise SystemExit(main())
