"""Token maps: every token of a few images drawn over the image as the model saw it, coloured by
the class identifiability of the image's true class after a few blocks (fig_token_maps_<model>).

Image tokens fill the patch grid; the prefix tokens ([CLS], distillation, registers) form a
strip right of the image. Tokens whose top-1 class is the true class are outlined, and the
outline of the class's segmentation mask is drawn where the dataset has masks.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

from ..analyses.identifiability import class_identifiability
from ..analyses.token_states import (
    configured_images,
    default_images,
    read_layer,
    read_prediction_classes,
    read_stimuli,
    spread_blocks,
    token_labels,
)
from ..data import folder_masks, imagenet_s
from ..errors import InputError
from ..models.preprocessing import Preprocessing, load_image
from ..models.tokens import CLS, DISTILLATION, REGISTER, TokenLayout
from ..results_layout import layer_name
from .plotting import class_names, new_figure, plot_text, save_figure, short_name

#: Colour map of class identifiability, shared with the explorer pages.
IDENTIFIABILITY_CMAP = "viridis"
TOKEN_ALPHA = 0.6
TOP1_COLOR = "black"
MASK_COLOR = "#e41a1c"
PREFIX_SHORT = {CLS: "C", DISTILLATION: "D", REGISTER: "R"}


def short_class_names(images_dir: str | Path, stimuli: pd.DataFrame, num_classes: int) -> list[str]:
    """Short names of all ``num_classes`` classes (a head wider than the dataset's class list
    names its extra outputs "class <i>")."""
    names = class_names(Path(images_dir) / "LOC_synset_mapping.txt", stimuli, num_classes)
    return [short_name(n) for n in names] + [f"class {i}" for i in range(len(names), num_classes)]


def chosen_images(stimuli: pd.DataFrame, entries: list[dict] | None) -> list[int]:
    return default_images(stimuli) if entries is None else configured_images(stimuli, entries, "token_maps.images")


def chosen_blocks(blocks: list[int] | None, num_blocks: int) -> list[int]:
    if blocks is None:
        return spread_blocks(num_blocks)
    outside = [b for b in blocks if b >= num_blocks]
    if outside:
        raise InputError(f"token_maps.blocks: {outside} are not 0-based blocks of a {num_blocks}-block model.")
    return list(blocks)


def mask_view(mask: np.ndarray, preprocessing: Preprocessing) -> np.ndarray:
    """A segmentation mask resized and cropped as its image, as a (H, W) boolean array."""
    from PIL import Image

    view = preprocessing.model_view(Image.fromarray(np.uint8(mask) * 255))
    return np.asarray(view)[..., 0] >= 128


def draw_panel(ax, view: np.ndarray, ci: np.ndarray, rank: np.ndarray, layout: TokenLayout, mask) -> None:
    """One image with its tokens' identifiability (``ci``, ``rank``: one value per token)."""
    height, width = view.shape[:2]
    n_rows, n_cols = layout.grid
    cmap = matplotlib.colormaps[IDENTIFIABILITY_CMAP]
    cell_w, cell_h = width / n_cols, height / n_rows
    ax.imshow(view, extent=(0, width, height, 0))
    image_ci = ci[layout.image_tokens].reshape(n_rows, n_cols)
    ax.imshow(cmap(image_ci), alpha=TOKEN_ALPHA, extent=(0, width, height, 0), interpolation="nearest")
    for position in np.flatnonzero(rank[layout.image_tokens] == 0):
        row, col = divmod(int(position), n_cols)
        ax.add_patch(
            Rectangle((col * cell_w, row * cell_h), cell_w, cell_h, fill=False, edgecolor=TOP1_COLOR, linewidth=1.2)
        )
    if mask is not None and mask.any() and not mask.all():
        xs, ys = np.arange(width) + 0.5, np.arange(height) + 0.5
        ax.contour(xs, ys, mask.astype(float), levels=[0.5], colors=MASK_COLOR, linewidths=1.0, linestyles="--")
    right = width
    if layout.n_prefix:
        # The prefix strip: one square per prefix token, top down, right of the image.
        size = min(cell_w, height / layout.n_prefix)
        left = width + 0.25 * cell_w
        for position, kind in enumerate(layout.prefix):
            top = position * size
            ax.add_patch(Rectangle((left, top), size, size, facecolor=cmap(ci[position]), edgecolor="white"))
            if rank[position] == 0:
                ax.add_patch(Rectangle((left, top), size, size, fill=False, edgecolor=TOP1_COLOR, linewidth=1.2))
            ax.text(left + size / 2, top + size / 2, PREFIX_SHORT[kind], ha="center", va="center", fontsize=5)
        right = left + size
    ax.set_xlim(0, right)
    ax.set_ylim(height, 0)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    for spine in ax.spines.values():
        spine.set_visible(False)


def fig_token_maps(
    model: dict,
    preprocessing: dict,
    stimuli_table: str,
    images_dir: str,
    categories: str | None,
    labels_table: str | None,
    settings: dict,
    output,
    masks_dir: str | None = None,
) -> None:
    """Rows: images (``settings["images"]``, default the first image of four classes); columns:
    blocks (``settings["blocks"]``, default five spread over the depth); the residual stream
    (hs) of each block."""
    layout = TokenLayout.of(model)
    stimuli = read_stimuli(stimuli_table)
    images = np.asarray(chosen_images(stimuli, settings["images"]), dtype=np.int64)
    blocks = chosen_blocks(settings["blocks"], model["num_blocks"])
    num_classes = model["num_classes"]
    names = short_class_names(images_dir, stimuli, num_classes)
    true, pred = read_prediction_classes(model["predictions"], images)
    labels = token_labels(layout, labels_table, images)
    states = {b: read_layer(model["layers"][layer_name("hs", b)], images, layout) for b in blocks}
    prep = Preprocessing(preprocessing)
    seg_ids = imagenet_s.segmentation_ids(categories) if categories is not None else None

    fig, axes = new_figure(len(images), len(blocks), (1.55 * len(blocks) + 1.3, 1.6 * len(images) + 0.6))
    rows = []
    for i, image in enumerate(images):
        stimulus = stimuli.loc[stimuli["image"] == image].iloc[0]
        source = load_image(Path(images_dir) / stimulus["file"])
        view = np.asarray(prep.model_view(source))
        mask = None
        if masks_dir is not None:  # a labelled image folder with masks
            mask = mask_view(folder_masks.mask_of(masks_dir, stimulus["file"]), prep)
        elif seg_ids is not None:
            mask = mask_view(
                imagenet_s.class_mask(Path(images_dir).parent, seg_ids, categories, stimulus["wnid"], stimulus["file"]),
                prep,
            )
        for j, block in enumerate(blocks):
            rank = states[block].rank[i]
            ci = class_identifiability(rank, num_classes)
            ax = axes[i, j]
            draw_panel(ax, view, ci, rank, layout, mask)
            if i == 0:
                ax.set_title(f"Block {block + 1}", fontsize="medium")
            top1 = states[block].top5[i, :, 0]
            rows.append(
                pd.DataFrame(
                    {
                        "model": model["name"],
                        "image": int(image),
                        "wnid": stimulus["wnid"],
                        "true_class": int(true[i]),
                        "true_name": names[true[i]],
                        "predicted_class": int(pred[i]),
                        "predicted_name": names[pred[i]],
                        "layer": f"hs_{block}",
                        "block": block,
                        "token": np.arange(layout.n_tokens),
                        "token_label": labels[i],
                        "rank": rank,
                        "identifiability": ci,
                        "top1_class": top1,
                        "true_class_top1": rank == 0,
                    }
                )
            )
        verdict = "✓" if true[i] == pred[i] else "✗"
        axes[i, 0].set_ylabel(plot_text(f"{names[true[i]]}\npred: {names[pred[i]]} {verdict}"), fontsize=6.5)
    fig.colorbar(
        ScalarMappable(Normalize(0, 1), IDENTIFIABILITY_CMAP),
        ax=axes,
        shrink=0.6,
        label="class identifiability of the true class (1 − rank/C)",
    )
    handles = [Patch(fill=False, edgecolor=TOP1_COLOR, label="true class is top-1")]
    if seg_ids is not None:
        handles.append(Line2D([], [], color=MASK_COLOR, linestyle="--", label="class mask"))
    if layout.n_prefix:
        handles.append(Patch(color="none", label="strip: " + ", ".join(layout.prefix)))
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize="small", frameon=False)
    fig.suptitle(plot_text(f"{model['display_name']}: tokens over the image, by block"), fontsize="medium")
    save_figure(fig, pd.concat(rows, ignore_index=True), output)
