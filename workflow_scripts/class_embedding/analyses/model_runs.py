"""Running a configured model on a job's stimulus images: the job's setup (the trained model, its
stimuli in stimulus order with their preprocessing, the run's metadata), the selection of which
tokens a forward pass keeps, and the location of the attention modules that hooks modify.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from .. import tables
from ..errors import InputError
from ..extraction import lens, shards
from ..models import ModelSpec, building, preprocessing
from ..models.tokens import TokenLayout
from . import token_removal


def require_class_token(model) -> None:
    if not lens.has_class_token(model):
        raise InputError(
            "perturbations need a model with a [CLS] token (docs/method.md §4.9–4.10); GAP models have none."
        )


def attention_modules(model) -> list[torch.nn.Module]:
    attentions = [block.attn for block in model.blocks]
    for b, attn in enumerate(attentions):
        if not (hasattr(attn, "fused_attn") and isinstance(getattr(attn, "attn_drop", None), torch.nn.Dropout)):
            raise InputError(
                f"block {b}: {type(attn).__name__} is not a timm Attention with attn_drop and fused_attn; "
                "the attention perturbation hooks only those."
            )
    return attentions


class TokenSelection:
    """Keep only some sequence positions of the embedded sequence, before the first block, each
    with its own position information (:func:`.token_removal.install`).

    Use as a context manager; call :meth:`set_positions` with a (B, K) index tensor of sequence
    positions before each forward: the model's prefix tokens ([CLS], [DIST], registers) first, in
    order, then any image tokens.
    """

    def __init__(self, model):
        require_class_token(model)
        self.model = model
        self.n_prefix = TokenLayout.of_timm(model).n_prefix
        self.positions: torch.Tensor | None = None
        self._restore = None

    def set_positions(self, positions: torch.Tensor) -> None:
        # Rotary embeddings skip exactly the first n_prefix tokens: they must be the prefix.
        prefix = torch.arange(self.n_prefix, device=positions.device)
        if positions.shape[1] < self.n_prefix or not (positions[:, : self.n_prefix] == prefix).all():
            raise ValueError(
                f"every row of positions must start with the {self.n_prefix} prefix positions 0..{self.n_prefix - 1}"
            )
        self.positions = positions

    def __enter__(self) -> TokenSelection:
        self._restore = token_removal.install(self.model, lambda: self.positions)
        return self

    def __exit__(self, *exc) -> None:
        self._restore()
        self.positions = None


@dataclass
class Setup:
    """What the perturbation and explanation jobs load: the trained model and the stimuli in stimulus order."""

    model: torch.nn.Module
    dataset: shards.StimulusImages
    images: np.ndarray
    targets: np.ndarray
    metadata: dict

    @classmethod
    def for_job(cls, job) -> Setup:
        """The setup of a Snakemake job with ``params.spec``, ``wildcards.model`` and the inputs
        ``checkpoint``, ``stimuli`` and ``images``."""
        return cls.load(job.params.spec, job.wildcards.model, job.input.checkpoint, job.input.stimuli, job.input.images)

    @classmethod
    def load(cls, spec: ModelSpec | dict, name: str, checkpoint: str, stimuli: str, images_dir: str) -> Setup:
        spec = ModelSpec.from_params(spec, name)
        if not spec.class_token:
            raise InputError(f"models.{name} has no [CLS] token: perturbations run only on [CLS] models.")
        model = building.load_model(spec, name, checkpoint)
        table = tables.read_table(stimuli)
        order = np.argsort(table.column("image").to_numpy(), kind="stable")
        table = table.take(pa.array(order))
        return cls(
            model=model,
            dataset=shards.StimulusImages(
                table.column("file").to_pylist(), images_dir, preprocessing.Preprocessing(spec.preprocessing)
            ),
            images=table.column("image").to_numpy().astype(np.int64),
            targets=table.column("class_index").to_numpy().astype(np.int64),
            metadata={
                **building.model_metadata(spec, name, checkpoint),
                "block": spec.num_blocks - 1,
                "stimuli": stimuli,
            },
        )
