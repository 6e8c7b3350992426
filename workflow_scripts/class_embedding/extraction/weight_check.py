"""The weight check: a model must reproduce known values on a sample image before any
extraction of it runs.

The image goes through the extraction's own preprocessing and the class-embedding lens, so a
pass says that weights, preprocessing and lens together give what the original gave (for
ViT-B/16 the tutorial's printed numbers). Expected values are per layer (``hs_b``, ``attn_b``,
``mlp_b``) and token, from token 0 on: the logit of the image's class (within a tolerance), the
0-based rank of that class and the leading classes of the projection (exact).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import tables
from ..errors import InputError
from ..models import ModelSpec, building
from ..models.preprocessing import Preprocessing, load_image
from ..models.tokens import TokenLayout
from . import lens

KINDS = ("logits", "ranks", "top_classes")


@dataclass
class SampleImage:
    name: str
    path: Path
    class_index: int


def resolve_sample(
    name: str,
    spec: dict,
    file: str | os.PathLike | None = None,
    stimuli: str | os.PathLike | None = None,
    images: str | os.PathLike | None = None,
) -> SampleImage:
    """A sample image of the config (``sample_images.<name>``) as a file and its class.

    ``file`` is the downloaded or given file; a ``stimulus`` sample is looked up by wnid and
    img_index in the ``stimuli`` table of its dataset (images under ``images``), and its class is
    the stimulus's (a declared ``class_index`` must agree with it).
    """
    if "stimulus" not in spec:
        return SampleImage(name, Path(file), int(spec["class_index"]))
    wanted = spec["stimulus"]
    table = tables.read_table(stimuli).to_pandas()
    rows = table[(table["wnid"] == wanted["wnid"]) & (table["img_index"] == wanted["image"])]
    if rows.empty:
        raise InputError(
            f"sample_images.{name}.stimulus: no stimulus is image {wanted['image']} of class folder "
            f"{wanted['wnid']} in {stimuli}: pick a wnid and img_index of that table."
        )
    row = rows.iloc[0]
    declared = spec.get("class_index")
    if declared is not None and declared != int(row["class_index"]):
        raise InputError(
            f"sample_images.{name}.class_index is {declared} but the stimulus's class is {int(row['class_index'])}: "
            f"fix or remove class_index."
        )
    return SampleImage(name, Path(images) / row["file"], int(row["class_index"]))


def layer_order(layers) -> list[str]:
    """Layer names in the order of the forward (within a block: attn, mlp, then hs)."""
    forward = ("attn", "mlp", "hs")

    def key(name):
        kind, block = name.split("_")
        return int(block), forward.index(kind)

    return sorted(layers, key=key)


def observe(model: torch.nn.Module, image: torch.Tensor, class_index: int) -> dict[str, lens.LayerReduction]:
    """Every layer's lens reduction of one preprocessed image (C, H, W) for ``class_index``,
    from the extraction's hooks (the lens audit included), on the CPU."""
    hooks = lens.ClassEmbeddingLens(model)
    with hooks, torch.inference_mode():
        hooks.set_targets(torch.tensor([class_index]))
        logits = model(image.unsqueeze(0))
        lens.audit(model, hooks.record.last_state, logits, "the weight check")
    return {name: reduction.cpu() for name, reduction in hooks.record.layers.items()}


@dataclass
class Comparison:
    kind: str  # logits | ranks | top_classes
    layer: str
    token: int
    expected: float | int | list[int]
    found: float | int | list[int]
    ok: bool

    def describe(self, class_index: int, tolerance: float) -> str:
        where = f"at {self.layer} token {self.token}"
        if self.kind == "logits":
            return f"logit of class {class_index} {where}: expected {self.expected} (± {tolerance:g}), found {self.found:.4f}"
        if self.kind == "ranks":
            return f"rank of class {class_index} {where}: expected {self.expected}, found {self.found}"
        return f"leading classes {where}: expected {self.expected}, found {self.found}"


def compare(
    expected: dict, observed: dict[str, lens.LayerReduction], tolerance: float, rank_tolerance: int = 0
) -> list[Comparison]:
    """Every expected value beside the observed one, in forward order."""
    results = []
    for kind in KINDS:
        for layer in layer_order(expected.get(kind, {})):
            values = expected[kind][layer]
            reduction = observed[layer]
            for token, value in enumerate(values):
                if kind == "logits":
                    found = float(reduction.logit[0, token])
                    ok = abs(found - value) <= tolerance
                elif kind == "ranks":
                    found = int(reduction.rank[0, token])
                    ok = abs(found - value) <= rank_tolerance
                else:
                    found = [int(c) for c in reduction.top5[0, token, : len(value)]]
                    ok = found == list(value)
                results.append(Comparison(kind, layer, token, value, found, ok))
    return results


def check_expected_fits(expected: dict, model: torch.nn.Module, name: str) -> None:
    """Layers, tokens and classes of the expected values exist in the model."""
    n_tokens = TokenLayout.of_timm(model).n_tokens
    layers = set(lens.layer_names(len(model.blocks)))
    for kind in KINDS:
        for layer, values in expected.get(kind, {}).items():
            key = f"expected_values.{name}.{kind}.{layer}"
            if layer not in layers:
                raise InputError(
                    f"{key}: model '{name}' has no layer {layer} (it has {len(model.blocks)} blocks, 0-based)."
                )
            if len(values) > n_tokens:
                raise InputError(f"{key}: {len(values)} values but model '{name}' has {n_tokens} tokens.")


def check_weights(
    model: torch.nn.Module, name: str, spec: ModelSpec | dict, expected: dict, sample: SampleImage
) -> dict:
    """Run the sample image through the model's preprocessing and the lens and compare with
    ``expected`` (an ``expected_values`` entry); raise :class:`InputError` naming every mismatch
    and the likely causes, else return a report of every compared value."""
    spec = ModelSpec.from_params(spec, name)
    check_expected_fits(expected, model, name)
    image = Preprocessing(spec.preprocessing)(load_image(sample.path))
    observed = observe(model.cpu().eval(), image, sample.class_index)
    tolerance, rank_tolerance = expected["logit_tolerance"], expected["rank_tolerance"]
    results = compare(expected, observed, tolerance, rank_tolerance)
    failed = [r for r in results if not r.ok]
    if failed:
        lines = "\n".join(f"  {r.describe(sample.class_index, tolerance)}" for r in failed[:12])
        more = f"\n  ... and {len(failed) - 12} more" if len(failed) > 12 else ""
        if all(is_near(r) for r in failed):
            more += (
                f"\nEvery difference is small (logits within {NEAR_LOGIT}, ranks within {NEAR_RANK}, no top class "
                f"missing): the hardware's float rounding rather than other weights may explain it; if so, widen "
                f"expected_values.{name}.logit_tolerance / rank_tolerance."
            )
        raise InputError(
            f"weight check of model '{name}' failed on sample image '{sample.name}' ({sample.path}, class "
            f"{sample.class_index}): {len(failed)} of {len(results)} values differ.\n{lines}{more}\n"
            f"Likely causes: the weights are not the expected ones (models.{name}.weights: {describe_weights(spec)}; "
            f"timm's default tag of an architecture can change between versions, so name the exact tag), or the "
            f"preprocessing differs from the original's (models.{name}.preprocessing: {spec.preprocessing}), or "
            f"the sample image is not the one the values were taken on. Nothing was extracted."
        )
    return {
        "model": name,
        "weights": describe_weights(spec),
        "image": sample.name,
        "class_index": sample.class_index,
        "logit_tolerance": tolerance,
        "rank_tolerance": rank_tolerance,
        "compared": [vars(r) for r in results],
    }


# What "small" means in the hint of a failed check: float rounding moves a logit by far less than
# 0.01 and a rank by a neighbour or two; other weights move most values by much more.
NEAR_LOGIT = 0.01
NEAR_RANK = 2


def is_near(result: Comparison) -> bool:
    if result.kind == "logits":
        return abs(result.found - result.expected) <= NEAR_LOGIT
    if result.kind == "ranks":
        return abs(result.found - result.expected) <= NEAR_RANK
    return sorted(result.found) == sorted(result.expected)


def describe_weights(spec: ModelSpec) -> str:
    weights = spec.weights
    detail = {key: value for key, value in weights.items() if key in ("tag", "url", "path", "seed")}
    return f"source {weights['source']}" + "".join(f", {key} {value}" for key, value in detail.items())


def job_model_and_sample(job, name: str, image: str) -> tuple[ModelSpec, torch.nn.Module, SampleImage]:
    """The spec, the model with its checkpoint and the sample image ``image`` of a Snakemake job
    with ``params.spec``, ``params.sample`` and the inputs ``checkpoint`` (and ``sample``,
    ``stimuli``, ``images`` where the sample needs them)."""
    spec = ModelSpec.from_params(job.params.spec, name)
    sample = resolve_sample(
        image,
        job.params.sample,
        file=job.input.get("sample"),
        stimuli=job.input.get("stimuli"),
        images=job.input.get("images"),
    )
    model = building.load_model(spec, name, job.input.checkpoint)
    return spec, model, sample
