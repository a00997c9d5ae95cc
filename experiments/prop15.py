"""Runs the prop15 experiment: `python experiments/prop15.py --size quick` (see --help)."""

from synthalign.experiments.prop15 import main

if __name__ == "__main__":
    main()
