"""RLHF collapses or underfits; unregularized PMLE/DPO are blind where there is no data (spec §2).

Same as `synthalign run degeneracy [options]`; the experiment itself is synthalign/experiments/degeneracy.py.
"""

from synthalign.experiments.degeneracy import main

if __name__ == "__main__":
    raise SystemExit(main())
