"""Figure 1 of the paper: RLHF with beta tuned per n saturates while RKL keeps falling (spec §5).

Same as `synthalign run fig1 [options]`; the experiment itself is synthalign/experiments/fig1.py.
"""

from synthalign.experiments.fig1 import main

if __name__ == "__main__":
    raise SystemExit(main())
