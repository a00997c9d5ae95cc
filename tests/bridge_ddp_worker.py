"""Trains a tiny Llama for a few steps with the bridge and saves its parameters: run by tests/test_bridge_ddp.py.

Run under `torchrun --nproc_per_node P` (P processes, gloo on the CPU) or as a plain script (one
process).  Every process builds the same model, data and global batches from fixed seeds; the
trainer keeps each process's shard.  Rank 0 writes the final parameters to the path given.
"""

from __future__ import annotations

import sys

import torch

torch.set_num_threads(1)

import accelerate  # noqa: E402
import transformers  # noqa: E402

import synthalign as sa  # noqa: E402

V, L, X = 4, 2, 3
STEPS = 2


def tiny_llama(seed: int):
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        vocab_size=V, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=8,
    )  # fmt: skip
    return transformers.LlamaForCausalLM(config)


def train(objective: str, accelerator, **kwargs) -> list[torch.Tensor]:
    """STEPS steps of `objective` on fixed global batches of 7 rows with unequal weights."""
    world = sa.SequenceWorld.random(V, L, X, seed=3)
    model, reference = tiny_llama(0), tiny_llama(0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    trainer = sa.make_trainer(objective, model, reference, optimizer, world=world, accelerator=accelerator, **kwargs)
    generator = torch.Generator().manual_seed(11)
    policy = sa.LMPolicy(model, world.space, X)
    for _ in range(STEPS):
        prompts = torch.randint(X, (7,), generator=generator)
        weight = torch.rand(7, generator=generator, dtype=torch.float64) * torch.tensor([1, 1, 1, 1, 9, 9, 9.0])
        if isinstance(trainer, (sa.OnPolicyTrainer, sa.OnPolicyPairTrainer)):
            trainer(prompts, weight=weight)
            continue
        chosen, rejected = (torch.randint(world.n_sequences, (7,), generator=generator) for _ in range(2))
        batch = policy.pair_batch(prompts, chosen, rejected)
        trainer(batch, weight=weight, prompts=prompts)
    return [p.detach().clone() for p in accelerator.unwrap_model(trainer.model).parameters()]


CASES = {
    "dpo": dict(objective="dpo"),
    "pmle_kl": dict(objective="pmle", beta=0.5, samples=3),
    "rkl": dict(objective="rkl", beta=0.1, samples=3),
    "distillation_policy": dict(objective="distillation", pairs_from="policy"),
}


def main(path: str, micro_batch_size: int | None = None) -> None:
    accelerator = accelerate.Accelerator(cpu=True)
    results = {"num_processes": accelerator.num_processes}
    for name, case in CASES.items():
        results[name] = train(accelerator=accelerator, micro_batch_size=micro_batch_size, **case)
    if accelerator.is_main_process:
        torch.save(results, path)
    accelerator.wait_for_everyone()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else None)
