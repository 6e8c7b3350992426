"""The tutorial notebook's two figures (docs/method.md §5): the class logits of one block's [CLS]
projection for a sample image, and the summed-gradient heat map of a sample image.

Both take one sample image (:class:`class_embedding.extraction.weight_check.SampleImage`) through the
model's own preprocessing; the heat map reuses the explanation code of notebook 3
(:mod:`class_embedding.analyses.gradients`, :func:`class_embedding.figures.explain_figures.overlay`). Each writes
``output.pdf``, ``output.png`` and the plotted numbers as ``output.data`` (CSV).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..analyses import gradients
from ..analyses.model_runs import require_class_token
from ..extraction import projection, selection
from ..extraction.weight_check import SampleImage
from ..models import ModelSpec
from ..models.preprocessing import Preprocessing, load_image
from ..models.tokens import TokenLayout
from .explain_figures import normalise, overlay
from .plotting import new_figure, plot_text, save_figure


def cls_logits(model: torch.nn.Module, image: torch.Tensor, block: int) -> np.ndarray:
    """(C,) class logits of the [CLS] token after block ``block`` (0-based), through the lens."""
    require_class_token(model)
    states = {}
    handle = model.blocks[block].register_forward_hook(lambda module, inputs, output: states.update(hs=output))
    try:
        with torch.inference_mode():
            model(image.unsqueeze(0))
            return projection.project(model, states["hs"][0, 0]).numpy()
    finally:
        handle.remove()


def fig_tutorial_cls_logits(
    model, name: str, spec: ModelSpec | dict, sample: SampleImage, block: int, x_label: str, output
) -> None:
    """Bar plot of the C class logits of the [CLS] projection of ``hs_<block>`` (the tutorial:
    ViT-B/16, block index 10, the beagle image)."""
    image = Preprocessing(ModelSpec.from_params(spec, name).preprocessing)(load_image(sample.path))
    logits = cls_logits(model.eval(), image, block)
    classes = np.arange(logits.size)
    fig, axes = new_figure(1, 1, (8.0, 3.0))
    ax = axes[0, 0]
    ax.bar(classes, logits, width=1.0)
    ax.set_xlabel(x_label)
    ax.set_ylabel("Class Logit")
    ax.set_xlim(-0.5, logits.size - 0.5)
    data = pd.DataFrame(
        {
            "model": name,
            "image": sample.name,
            "image_class": sample.class_index,
            "layer": f"hs_{block}",
            "token": 0,
            "class_index": classes,
            "logit": logits.astype(np.float64),
            "rank": selection.rank_of(
                torch.from_numpy(logits)[None].expand(logits.size, -1), torch.from_numpy(classes)
            ).numpy(),
        }
    )
    save_figure(fig, data, output)


def fig_tutorial_heatmap(
    model, name: str, spec: ModelSpec | dict, sample: SampleImage, loss: str, swap_red_blue: bool, output
) -> None:
    """Summed class-embedding gradient map of the sample image for its own class (the
    tutorial: ViT-B/16, the impala image, class 352), drawn as notebook 3 draws its maps."""
    image = Preprocessing(ModelSpec.from_params(spec, name).preprocessing)(load_image(sample.path))
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    grads = gradients.block_gradients(model.eval(), image.unsqueeze(0), torch.tensor([sample.class_index]), loss)
    importance = gradients.summed_map(grads, TokenLayout.of_timm(model).n_prefix)[0].numpy().astype(np.float64)
    fig, axes = new_figure(1, 1, (3.2, 3.4))
    ax = axes[0, 0]
    ax.imshow(overlay(image, importance, TokenLayout.of_timm(model).grid, swap_red_blue))
    ax.set_title(plot_text(f"{sample.name.replace('_', ' ')} (class {sample.class_index})"), fontsize="medium")
    ax.axis("off")
    data = pd.DataFrame(
        {
            "model": name,
            "image": sample.name,
            "target": sample.class_index,
            "loss": loss,
            "token": np.arange(1, importance.size + 1),
            "importance": importance,
            "normalised": normalise(importance),
        }
    )
    save_figure(fig, data, output)
