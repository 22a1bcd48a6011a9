"""`python -m pgolf` is the `pgolf` command."""

from pgolf.cli import main

raise SystemExit(main())
