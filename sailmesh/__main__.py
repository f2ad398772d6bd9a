"""Entry point for `python -m sailmesh`."""

from sailmesh.cli.main import main

raise SystemExit(main())
