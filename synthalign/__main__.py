"""`python -m synthalign ...` runs the command-line interface (see `synthalign.cli`)."""

from synthalign.cli import main

raise SystemExit(main())
