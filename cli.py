"""lesion-pl's command line in a checkout: `python cli.py COMMAND` (installed: `lesion-pl COMMAND`). The commands
live in lesion_pl/cli.py."""
import sys

from lesion_pl.cli import app, main  # noqa: F401  (`from cli import app`: the typer app)

if __name__ == "__main__":
    sys.exit(main())
