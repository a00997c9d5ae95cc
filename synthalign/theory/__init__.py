"""The paper's mathematics on a finite world: closed forms, constants, lemmas and bounds (spec §2–4).

* `synthalign.theory.closed_forms`: closed-form minimizers and declared population minimizers;
* `synthalign.theory.constants`: R, C_Π, C_ℛ, C_0 for a world and a finite class;
* `synthalign.theory.lemmas`: Lemmas 8, 9, 10 and ψ;
* `synthalign.theory.bounds`: the right-hand sides of Prop. 12, Thms 4, 6, 7, 14 and Prop. 15;
* `synthalign.theory.games`: the preference game of a general law: von Neumann winners, the
  regularized Nash equilibrium, exact duality gaps.

Nothing here fits or samples; `synthalign.bounds` re-exports the last three for users.
"""

__all__: list[str] = []  # a namespace of submodules; import them by name
