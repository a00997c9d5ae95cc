#!/usr/bin/env bash
# The prepared GPU check of the transformer bridge (a few minutes on one GPU), printing figures:
#   1. the sequence-gap experiment at full size on cuda (its summary table);
#   2. sampling throughput: sequences/s and tokens/s of LMPolicy.sample (the bridge's batched ancestral
#      sampler, one forward per position) on a small Llama, and of the tabular autoregressive sampler;
#   3. the bridge's training tokens/s: PairTrainer (DPO, a reference model) steps on one GPU through accelerate.
#
#   benchmarks/gpu_check.sh            # cuda, full size
#   benchmarks/gpu_check.sh --cpu      # smoke test on CPU: reduced sizes, same code paths
#
# PYTHON (default: python) is the interpreter with synthalign[bridge]; OUT (default: runs/gpu_check) the folder of
# the sequence-gap record.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
OUT=${OUT:-runs/gpu_check}
if [[ "${1:-}" == "--cpu" ]]; then
    DEVICE=cpu
    GAP=(--quick --set steps=5 --set log2_ns=5,7 --set tilts=0,2)
else
    DEVICE=cuda
    GAP=(--full)
fi
export PYTHONPATH="${PYTHONPATH:-.}"

"$PYTHON" - <<'EOF'
import torch, transformers, accelerate, synthalign
name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
print(f"torch {torch.__version__}, transformers {transformers.__version__}, accelerate {accelerate.__version__}, "
      f"synthalign {synthalign.__version__}; {name}")
EOF

echo "== 1. sequence-gap (${GAP[*]}) on $DEVICE"
start=$(date +%s)
"$PYTHON" -m synthalign run sequence-gap "${GAP[@]}" --device "$DEVICE" --out "$OUT"
echo "sequence-gap wall time: $(( $(date +%s) - start )) s"

echo "== 2-3. sampling throughput and the bridge's tokens/s on $DEVICE"
"$PYTHON" - "$DEVICE" <<'EOF'
import sys
import time

import torch
import transformers

import synthalign as sa
from synthalign.bridge import LMPolicy, make_trainer

device = sys.argv[1]
smoke = device == "cpu"


def sync():
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn, repeats):
    fn()  # warm-up (kernels, allocator)
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync()
    return (time.perf_counter() - start) / repeats


def llama(vocab, hidden, layers, seed=0):
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=max(2, hidden // 64),
        intermediate_size=4 * hidden, max_position_embeddings=128,
    )
    return transformers.LlamaForCausalLM(config).to(device)


# 2. sampling: V = 16 tokens, sequences of at most L = 8 (2.7e9 of them: sampled, never enumerated)
V, L, X = 16, 8, 4
space = sa.SequenceSpace(V, L)
model = llama(V, 64 if smoke else 256, 2 if smoke else 4).eval()
policy = LMPolicy(model, space, X)
prompts = torch.arange(X, device=device).repeat(8 if smoke else 256)
samples = 4 if smoke else 16
generator = torch.Generator(device=device).manual_seed(0)
seconds = timed(lambda: policy.sample(prompts, samples, generator), 2 if smoke else 5)
n_sequences = prompts.numel() * samples
ids = policy.sample(prompts, samples, generator)
tokens = float(space.decode(ids)[1].sum())
print(f"LMPolicy.sample: {n_sequences / seconds:,.0f} sequences/s, {tokens / seconds:,.0f} tokens/s "
      f"({n_sequences} sequences of <= {L} tokens per call, {seconds * 1e3:.1f} ms)")
world = sa.SequenceWorld.random(V, 4, X, seed=0, device=device)  # tabular: every prefix has its own logits
tabular = sa.TabularAutoregressive(world.target, world.space)
big = torch.arange(X, device=device).repeat(1024 if smoke else 65536)
seconds = timed(lambda: tabular.sample(big, 1, generator), 2 if smoke else 5)
print(f"TabularAutoregressive.sample: {big.numel() / seconds:,.0f} sequences/s (L = 4, {big.numel()} per call)")

# 3. the bridge's training throughput: DPO through PairTrainer, one process, fp32
from accelerate import Accelerator

hidden, layers, T, B = (64, 2, 32, 8) if smoke else (512, 8, 256, 32)
model, reference = llama(256, hidden, layers, 0), llama(256, hidden, layers, 1)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
trainer = make_trainer("dpo", model, reference, optimizer, gamma=0.1, accelerator=Accelerator(cpu=smoke))
ids = torch.randint(0, 256, (B, T), generator=torch.Generator().manual_seed(0))
ones = torch.ones(B, T, dtype=torch.long)
completion = ones.clone()
completion[:, : T // 4] = 0  # a quarter of each sequence is prompt
batch = {}
for side, shift in (("chosen", 0), ("rejected", 1)):
    batch.update({f"{side}_input_ids": (ids + shift) % 256, f"{side}_attention_mask": ones,
                  f"{side}_completion_mask": completion})
seconds = timed(lambda: trainer(batch), 2 if smoke else 10)
n_params = sum(p.numel() for p in model.parameters())
print(f"PairTrainer (DPO, {n_params / 1e6:.1f}M-parameter Llama, batch {B} pairs x {T} tokens): "
      f"{2 * B * T / seconds:,.0f} tokens/s trained ({seconds * 1e3:.0f} ms/step, policy + reference forwards)")
if device == "cuda":
    print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
EOF
