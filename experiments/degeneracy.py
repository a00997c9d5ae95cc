"""Degenerate estimators (spec §2): RLHF collapses or underfits; unregularized PMLE/DPO are blind off the data.

Same as `synthalign run degeneracy [options]` (the same options: --quick, --full, --replicates, --seed,
--out, --device, --set FIELD=VALUE); the experiment itself is synthalign/experiments/degeneracy.py.
"""

import sys

from synthalign.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["run", "degeneracy", *sys.argv[1:]]))
