"""``python -m tierwise`` runs the CLI."""

from tierwise.cli.main import run

if __name__ == "__main__":
    run()
