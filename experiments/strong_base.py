"""Runs the strong-base experiment: `python experiments/strong_base.py --size quick` (see --help)."""

from synthalign.experiments.strong_base import main

if __name__ == "__main__":
    main()
