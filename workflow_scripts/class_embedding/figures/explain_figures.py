"""Notebook 3 heat maps (docs/method.md §4.12, §5): class-embedding gradient maps of chosen images.

The figures compute their few maps directly from the checkpoint (a forward and a backward per
panel image, for each target class of the panel). They write ``output.pdf``, ``output.png`` and
the plotted numbers as a tidy CSV ``output.data``. The perturbation curves and their AUC table
are in :mod:`class_embedding.figures.explain_curve_figures` (no torch).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from ..analyses import gradients
from ..analyses.token_states import read_stimuli
from ..errors import InputError
from ..extraction import shards
from ..models import ModelSpec, building, preprocessing
from ..models.tokens import TokenLayout
from .plotting import class_names, new_figure, plot_text, save_figure, short_name

# ---------------------------------------------------------------------------------------------
# Heat maps (docs/method.md §4.12)


def normalise(values: np.ndarray) -> np.ndarray:
    """Min–max to [0, 1]; a constant map becomes zeros."""
    low, high = float(values.min()), float(values.max())
    return (values - low) / (high - low) if high > low else np.zeros_like(values, dtype=np.float64)


def overlay(
    image: torch.Tensor, importance: np.ndarray, grid: tuple[int, int], swap_red_blue: bool = True
) -> np.ndarray:
    """The paper's heat map of an importance vector over the (rows, cols) image tokens on the model input
    ``image`` (C, H, W, normalised): min–max normalised, bilinearly upsampled to the input size
    (align_corners false), JET colours of uint8(255·w) added to the min–max normalised photo,
    divided by the maximum → uint8 (H, W, 3) RGB.

    The original coloured with OpenCV (BGR) and swapped the channels of the sum before showing
    it: the heat map keeps its JET colours while the photo's red and blue are swapped.
    ``swap_red_blue`` reproduces that; matplotlib's ``jet`` stands in for OpenCV's JET table.
    """
    if grid[0] * grid[1] != importance.size:
        raise ValueError(f"{importance.size} image tokens do not form a {grid[0]}x{grid[1]} grid")
    height, width = image.shape[-2:]
    weights = torch.from_numpy(normalise(importance).astype(np.float32)).view(1, 1, *grid)
    weights = F.interpolate(weights, size=(height, width), mode="bilinear", align_corners=False)[0, 0].numpy()
    heat = matplotlib.colormaps["jet"](np.uint8(255 * np.clip(weights, 0, 1)))[..., :3]
    photo = normalise(image.permute(1, 2, 0).numpy())
    if swap_red_blue:
        photo = photo[..., ::-1]
    combined = heat + photo
    return np.uint8(255 * combined / combined.max())


# ---------------------------------------------------------------------------------------------
# Panels


@dataclass
class Panel:
    """One image with the target classes whose maps are drawn beside each other."""

    image: int  # stimulus id
    wnid: str
    img_index: int
    targets: list[int]
    titles: list[str]
    block: int | None = None
    head: int | None = None


@dataclass
class Explained:
    """What the heat-map figures load: the model, its stimuli and the class names."""

    name: str
    model: torch.nn.Module
    dataset: shards.StimulusImages
    stimuli: pd.DataFrame
    class_names: list[str]
    loss: str

    @classmethod
    def load(
        cls, model: dict, spec: ModelSpec | dict, checkpoint: str, stimuli: str, images: str, loss: str
    ) -> Explained:
        spec = ModelSpec.from_params(spec, model["name"])
        network = building.load_model(spec, model["name"], checkpoint)
        table = read_stimuli(stimuli)
        categories = class_names(Path(images) / "LOC_synset_mapping.txt", table, spec.num_classes)
        dataset = shards.StimulusImages(table["file"].tolist(), images, preprocessing.Preprocessing(spec.preprocessing))
        return cls(model["name"], network, dataset, table, categories, loss)

    def input(self, image: int) -> torch.Tensor:
        return self.dataset[image]

    def top_classes(self, images: list[int], k: int = 2) -> np.ndarray:
        with torch.inference_mode():
            logits = self.model(torch.stack([self.input(i) for i in images]))
        return logits.topk(k, dim=-1).indices.numpy()


def panel_key(kind: str, index: int, field: str) -> str:
    return f"explainability.figures.{kind}[{index}].{field}"


def configured_panels(explained: Explained, entries: list[dict], kind: str) -> list[Panel]:
    """Config panels → stimuli; unknown images, classes, blocks or heads name their key."""
    n_classes = explained.model.num_classes
    blocks = len(explained.model.blocks)
    heads = explained.model.blocks[0].attn.num_heads
    panels = []
    for index, entry in enumerate(entries):
        rows = explained.stimuli[
            (explained.stimuli["wnid"] == entry["wnid"]) & (explained.stimuli["img_index"] == entry["image"])
        ]
        if rows.empty:
            raise InputError(
                f"{panel_key(kind, index, 'wnid')}: no stimulus is image {entry['image']} of class folder "
                f"{entry['wnid']} for model {explained.name}: pick a wnid and image index of stimuli.parquet."
            )
        for target in entry["targets"]:
            if not 0 <= target < n_classes:
                raise InputError(f"{panel_key(kind, index, 'targets')}: class {target} is not in 0..{n_classes - 1}.")
        if "block" in entry and not 0 <= entry["block"] < blocks:
            raise InputError(
                f"{panel_key(kind, index, 'block')}: {entry['block']} is not a 0-based block below {blocks}."
            )
        if "head" in entry and not 0 <= entry["head"] < heads:
            raise InputError(f"{panel_key(kind, index, 'head')}: {entry['head']} is not a head below {heads}.")
        titles = list(entry.get("titles") or [None] * len(entry["targets"]))
        if len(titles) != len(entry["targets"]):
            raise InputError(f"{panel_key(kind, index, 'titles')}: give one title (or null) per target.")
        panels.append(
            Panel(
                image=int(rows["image"].iloc[0]),
                wnid=entry["wnid"],
                img_index=entry["image"],
                targets=list(entry["targets"]),
                titles=[title or short_name(explained.class_names[t]) for title, t in zip(titles, entry["targets"])],
                block=entry.get("block"),
                head=entry.get("head"),
            )
        )
    return panels


def automatic_panels(explained: Explained, count: int, with_head: bool) -> list[Panel]:
    """Without configured panels: the first image of the first ``count`` classes, its true class
    beside the model's highest-scoring other class; the last block and head 0 for head maps."""
    first = explained.stimuli.groupby("wnid", sort=False).head(1).head(count)
    top = explained.top_classes(first["image"].tolist(), k=2)
    panels = []
    for (_, row), best in zip(first.iterrows(), top):
        other = int(best[1] if best[0] == row["class_index"] else best[0])
        targets = [int(row["class_index"]), other]
        panels.append(
            Panel(
                image=int(row["image"]), wnid=row["wnid"], img_index=int(row["img_index"]), targets=targets,
                titles=[short_name(explained.class_names[t]) for t in targets],
                block=len(explained.model.blocks) - 1 if with_head else None, head=0 if with_head else None,
            )
        )  # fmt: skip
    return panels


def panels_from_config(explained: Explained, figures_config: dict, kind: str) -> list[Panel]:
    entries = figures_config.get(kind)
    if entries:
        return configured_panels(explained, entries, kind)
    return automatic_panels(explained, 2 if kind == "head_panels" else 4, with_head=kind == "head_panels")


def panel_gradients(explained: Explained, panel: Panel) -> torch.Tensor:
    """(n_targets, L, H, N) block gradients of the panel image for each of its targets."""
    image = explained.input(panel.image)
    images = image.unsqueeze(0).expand(len(panel.targets), *image.shape)
    return gradients.block_gradients(explained.model, images, torch.tensor(panel.targets), explained.loss)


@dataclass
class MapPanel:
    """One drawn heat map and the numbers behind it."""

    panel: Panel
    target_index: int
    kind: str  # head | sum
    importance: np.ndarray
    title: str


def map_panels(explained: Explained, panels: list[Panel], kind: str) -> list[MapPanel]:
    drawn = []
    n_prefix = TokenLayout.of_timm(explained.model).n_prefix
    for panel in panels:
        grads = panel_gradients(explained, panel)
        if kind == "head":
            maps = gradients.head_maps(grads, n_prefix)[:, panel.block, panel.head]
        else:
            maps = gradients.summed_map(grads, n_prefix)
        for t, title in enumerate(panel.titles):
            if kind == "head":
                title = f"{title} - bl. {panel.block}, h. {panel.head}"
            drawn.append(MapPanel(panel, t, kind, maps[t].numpy().astype(np.float64), title))
    return drawn


def draw_maps(axes, drawn: list[MapPanel], explained: Explained, swap_red_blue: bool) -> None:
    grid = TokenLayout.of_timm(explained.model).grid
    for ax, item in zip(axes, drawn):
        ax.imshow(overlay(explained.input(item.panel.image), item.importance, grid, swap_red_blue))
        ax.set_title(plot_text(item.title), fontsize="medium")
        ax.axis("off")
    for ax in axes[len(drawn) :]:
        ax.axis("off")


def maps_data(drawn: list[MapPanel], explained: Explained, figure_panel: str = "") -> pd.DataFrame:
    frames = []
    for number, item in enumerate(drawn):
        target = item.panel.targets[item.target_index]
        frames.append(
            pd.DataFrame(
                {
                    "model": explained.name,
                    "figure_panel": figure_panel,
                    "panel": number,
                    "image": item.panel.image,
                    "wnid": item.panel.wnid,
                    "img_index": item.panel.img_index,
                    "target": target,
                    "target_name": explained.class_names[target],
                    "title": item.title,
                    "map": item.kind,
                    "block": item.panel.block if item.kind == "head" else -1,
                    "head": item.panel.head if item.kind == "head" else -1,
                    "loss": explained.loss,
                    "token": np.arange(item.importance.size) + TokenLayout.of_timm(explained.model).n_prefix,
                    "importance": item.importance,
                    "normalised": normalise(item.importance),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def grid_axes(n_panels: int, ncols: int, panel_size: tuple[float, float]):
    ncols = max(1, min(ncols, n_panels))
    nrows = max(1, -(-n_panels // ncols))
    fig, axes = new_figure(nrows, ncols, (panel_size[0] * ncols, panel_size[1] * nrows))
    return fig, list(axes.flat)


def fig_explain_head(explained: Explained, figures_config: dict, output) -> None:
    """Head-specific maps (paper: ``explainability_vit_b_32_head_1.png``): one row per panel image."""
    drawn = map_panels(explained, panels_from_config(explained, figures_config, "head_panels"), "head")
    ncols = max(len(p.targets) for p in {id(d.panel): d.panel for d in drawn}.values())
    fig, axes = grid_axes(len(drawn), ncols, (2.5, 2.8))
    draw_maps(axes, drawn, explained, figures_config["swap_red_blue"])
    save_figure(fig, maps_data(drawn, explained), output)


def fig_explain_sum(explained: Explained, figures_config: dict, output) -> None:
    """Summed maps (paper: ``explainability_vit_b_32.png``, ``…_b_16.png``): four per row."""
    drawn = map_panels(explained, panels_from_config(explained, figures_config, "sum_panels"), "sum")
    fig, axes = grid_axes(len(drawn), 4, (3.0, 2.5))
    draw_maps(axes, drawn, explained, figures_config["swap_red_blue"])
    save_figure(fig, maps_data(drawn, explained), output)


def fig_explain_combined(explained: Explained, figures_config: dict, output) -> None:
    """Top row the head-specific maps, bottom row the summed maps of the same (image, class)
    pairs (paper: ``explainability_vit_b_32_v2.png``, first commit)."""
    panels = panels_from_config(explained, figures_config, "head_panels")
    rows = [
        ("(a) Block- and head-specific visualization", map_panels(explained, panels, "head")),
        ("(b) Sum of gradients visualization", map_panels(explained, panels, "sum")),
    ]
    ncols = len(rows[0][1])
    fig = Figure(figsize=(2.5 * ncols, 6), layout="constrained")
    for subfig, (label, drawn) in zip(fig.subfigures(2, 1), rows):
        axes = list(subfig.subplots(1, ncols, squeeze=False)[0])
        draw_maps(axes, drawn, explained, figures_config["swap_red_blue"])
        for ax, item in zip(axes, drawn):
            marker = f"({item.target_index + 1})"
            ax.text(0.03, 0.97, marker, transform=ax.transAxes, va="top", color="white", fontsize=8)
        subfig.suptitle(label, x=0.01, ha="left", fontweight="bold")
    data = pd.concat([maps_data(drawn, explained, label) for label, drawn in rows], ignore_index=True)
    save_figure(fig, data, output)
