"""Runs the onpolicy-gap experiment: `python experiments/onpolicy_gap.py --size quick` (see --help)."""

from synthalign.experiments.onpolicy_gap import main

if __name__ == "__main__":
    main()
