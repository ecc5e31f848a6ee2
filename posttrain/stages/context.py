"""What the stages of a run share: the recipe, the run directory, the engines, round 0's outputs, and the
earlier rounds' stage outputs that later rounds read (the SFT history, the scored tables, the judgments)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import pyarrow as pa

from posttrain.models.chat_turns import Chat
from posttrain.models.engine import Engines
from posttrain.recipe.config import Recipe, tracking_args
from posttrain.run import schema
from posttrain.run.dist import world
from posttrain.run.rundir import Part, RunDir, StageOutput
from posttrain.run.fingerprint import scoring
from posttrain.stages.prompts import round_prompts, train_files


@dataclass
class Context:
    recipe: Recipe
    run: RunDir
    base: StageOutput | None = None  # round 0's stages (posttrain/stages/setup.py)
    prompts: StageOutput | None = None
    heldout: pa.Table | None = None
    benchmarks: StageOutput | None = None
    eval_sets: dict | None = None  # every eval set's prompts and verifiers (stages/evaluate.py's eval_sets)
    engines: Engines | None = None
    # per round (index r - 1): the select stages, the scored tables (score or revise), what selection ranked
    # (the reward_model stage's table when an RM is trained), the judge stages (with mix.judge.model)
    selected: list[StageOutput] = field(default_factory=list)
    scored: list[StageOutput] = field(default_factory=list)
    ranked: list[StageOutput] = field(default_factory=list)
    judged: list[StageOutput] = field(default_factory=list)
    _train: dict[int, pa.Table] = field(default_factory=dict, repr=False)

    @property
    def seed(self) -> int:
        return self.recipe.seed

    @property
    def dry_run(self) -> bool:
        return self.run.dry_run

    def round_seed(self, r: int) -> int:
        """New samples each round, reproducible per prompt."""
        return self.seed * 1000 + r

    def train_prompts(self, r: int) -> pa.Table:
        """Round r's training prompts, read (and checked) once for the round's stages."""
        if r not in self._train:
            self._train = {r: round_prompts(self.prompts.path, r)}  # only this round's: earlier ones are done
        return self._train[r]

    @cached_property
    def score_config(self) -> dict:
        """The score section as the stages that score see it in their fingerprints (run/fingerprint.py)."""
        return scoring(self.recipe)

    def train_parts(self, rounds: list[int]) -> list[Part]:
        """The prompts stage's tables that hold `rounds`' training prompts, as stage inputs (rundir.Part)."""
        return [self.prompts.part(f.name) for f in train_files(self.prompts.path, rounds)]

    def chat(self, model: str) -> Chat:
        """How the stages render prompts for `model`: its tokenizer's chat template, the recipe's variables."""
        return Chat(tokenizer_of(model), self.template_kwargs)

    @property
    def template_kwargs(self) -> dict:
        """The recipe's `chat_template_kwargs`: every render of a chat template gets them (training too)."""
        return dict(self.recipe.chat_template_kwargs)

    def tracked(self, r: int, stage: str) -> dict:
        """The trained stages' runs in the recipe's trackers."""
        return tracking_args(self.recipe.tracking, self.recipe.name, stage, r)

    @property
    def is_main(self) -> bool:
        return world().is_main

    def prompts_table(self, name: str) -> pa.Table:
        """One table of the prompts stage (train, heldout, round_<r>)."""
        return schema.read(self.prompts.path / f"{name}.parquet", "prompts")


def read(stage: StageOutput, table: str) -> pa.Table:
    """One of a stage's tables, checked against its schema."""
    return schema.read(stage.path / f"{table}.parquet", table)


def tokenizer_of(model: str):
    from transformers import AutoTokenizer  # torch comes with it: only stages that render prompts pay for it

    return AutoTokenizer.from_pretrained(model)
