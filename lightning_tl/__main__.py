"""``python -m lightning_tl`` runs the ``lightning-tl`` command."""

from lightning_tl.cli import main

if __name__ == "__main__":
    main()
