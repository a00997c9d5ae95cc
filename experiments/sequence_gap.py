"""Sequence gap: a tiny transformer against the tabular autoregressive policy, offline and on-policy, measured exactly.

Same as `synthalign run sequence-gap [options]` (the same options: --quick, --full, --replicates, --seed,
--out, --device, --set FIELD=VALUE); the experiment itself is synthalign/experiments/sequence_gap.py.
"""

import sys

from synthalign.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["run", "sequence-gap", *sys.argv[1:]]))
