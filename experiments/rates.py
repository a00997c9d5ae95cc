"""Runs the rates experiment: `python experiments/rates.py --size quick` (see --help)."""

from synthalign.experiments.rates import main

if __name__ == "__main__":
    main()
