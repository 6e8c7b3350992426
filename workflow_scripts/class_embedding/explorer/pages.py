"""Explorer pages: one self-contained HTML page per model (results/explorer/<model>.html) that
shows every token of every block of a set of images, and an index page linking them.

A page works opened from disk without a network: the script, the styles, the images (downscaled
JPEG data URIs) and the token states are all inline. Token states travel as base64 typed arrays
(uint8 when the model has at most 256 classes, else uint16): per image, the rank of the true
class and the top-5 classes of every (layer kind, block, token), kind-major.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd

from ..analyses.token_states import (
    CLASS,
    CONTEXT,
    read_layer,
    read_prediction_classes,
    read_stimuli,
    token_labels,
)
from ..errors import InputError
from ..extraction.reader import LAYER_KINDS, layer_name
from ..figures.token_map_figures import IDENTIFIABILITY_CMAP, short_class_names
from ..models.preprocessing import Preprocessing, load_image
from ..models.tokens import TokenLayout
from ..tables import atomic_path

log = logging.getLogger(__name__)

TEMPLATE = Path(__file__).with_name("template.html")
DATA_MARK = "/*EXPLORER-DATA*/"
TITLE_MARK = "<!--EXPLORER-TITLE-->"
#: Image token labels, one character each on the page.
LABEL_CODES = {CLASS: "c", CONTEXT: "x"}
JPEG_QUALITY = 85
CI_COLOR_STOPS = 11


def image_order(stimuli: pd.DataFrame, images_per_class: int | None) -> list[int]:
    """Stimulus ids, round-robin over the classes (the first image of every class, then the
    second, ...), at most ``images_per_class`` of each: a size budget cut keeps classes balanced."""
    per_class = [group["image"].tolist()[:images_per_class] for _, group in stimuli.groupby("wnid", sort=False)]
    depth = max((len(ids) for ids in per_class), default=0)
    return [ids[k] for k in range(depth) for ids in per_class if k < len(ids)]


def data_uri(view, max_side: int) -> str:
    """The image as a JPEG data URI, shrunk so that its longer side is at most ``max_side``."""
    image = view.copy()
    image.thumbnail((max_side, max_side))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def encode(values: np.ndarray, dtype: str) -> str:
    return base64.b64encode(np.ascontiguousarray(values, dtype=np.dtype(f"<{dtype}")).tobytes()).decode()


def ci_colors() -> list[str]:
    """Stops of the identifiability colour map, the one the token-map figures use."""
    cmap = matplotlib.colormaps[IDENTIFIABILITY_CMAP]
    return [matplotlib.colors.to_hex(cmap(x)) for x in np.linspace(0, 1, CI_COLOR_STOPS)]


def image_entry(stimulus, true, pred, labels, layout, states, src, dtype) -> dict:
    """One image of the page; ``states``: rank (kinds, blocks, tokens), top5 (kinds, blocks, tokens, 5)."""
    grid_labels = labels[layout.image_tokens]
    return {
        "id": int(stimulus["image"]),
        "wnid": str(stimulus["wnid"]),
        "img_index": int(stimulus["img_index"]),
        "file": str(stimulus["file"]),
        "true": int(true),
        "pred": int(pred),
        "labels": "".join(LABEL_CODES.get(label, "-") for label in grid_labels),
        "src": src,
        "rank": encode(states["rank"], dtype),
        "top5": encode(states["top5"], dtype),
    }


def page_data(
    model: dict, preprocessing: dict, stimuli_table: str, images_dir: str, labels_table: str | None, settings: dict
) -> dict:
    """Everything the page shows, within ``settings["max_page_mb"]``."""
    layout = TokenLayout.of(model)
    stimuli = read_stimuli(stimuli_table)
    order = np.asarray(image_order(stimuli, settings["images_per_class"]), dtype=np.int64)
    if order.size == 0:
        raise InputError(f"{stimuli_table} has no images: the explorer page of {model['name']} would be empty.")
    num_classes, num_blocks = model["num_classes"], model["num_blocks"]
    dtype = "u1" if num_classes <= 256 else "u2"
    names = short_class_names(images_dir, stimuli, num_classes)
    layers = {
        (k, b): read_layer(model["layers"][layer_name(k, b)], order, layout)
        for k in LAYER_KINDS
        for b in range(num_blocks)
    }
    rank = np.stack([np.stack([layers[k, b].rank for b in range(num_blocks)], 1) for k in LAYER_KINDS], 1)
    top5 = np.stack([np.stack([layers[k, b].top5 for b in range(num_blocks)], 1) for k in LAYER_KINDS], 1)
    true, pred = read_prediction_classes(model["predictions"], order)
    labels = token_labels(layout, labels_table, order)
    prep = Preprocessing(preprocessing)
    by_id = stimuli.set_index("image", drop=False)
    budget = settings["max_page_mb"] * 1e6
    entries, size = [], len(json.dumps(names)) + TEMPLATE.stat().st_size
    for i, image in enumerate(order):
        stimulus = by_id.loc[int(image)]
        view = prep.model_view(load_image(Path(images_dir) / stimulus["file"]))
        entry = image_entry(
            stimulus,
            true[i],
            pred[i],
            labels[i],
            layout,
            {"rank": rank[i], "top5": top5[i]},
            data_uri(view, settings["image_px"]),
            dtype,
        )
        size += len(json.dumps(entry))
        if size > budget:
            log.warning(
                "%s: the page keeps %d of %d images to stay within explorer.max_page_mb = %s",
                model["name"],
                len(entries),
                order.size,
                settings["max_page_mb"],
            )
            break
        entries.append(entry)
    entries.sort(key=lambda entry: entry["id"])
    view_width, view_height = prep.model_view(load_image(Path(images_dir) / by_id.loc[int(order[0])]["file"])).size
    return {
        "model": model["name"],
        "display_name": model["display_name"],
        "num_classes": num_classes,
        "num_blocks": num_blocks,
        "class_names": names,
        "grid_rows": layout.grid[0],
        "grid_cols": layout.grid[1],
        "prefix": list(layout.prefix),
        "layers": list(LAYER_KINDS),
        "dtype": dtype,
        "ci_colors": ci_colors(),
        "aspect": view_height / view_width,
        "has_masks": labels_table is not None,
        "selected_images": int(order.size),
        "max_page_mb": settings["max_page_mb"],
        "images": entries,
    }


def render(data: dict, title: str) -> str:
    """The page: the template with the data inline. Every ``<``, ``>`` and ``&`` of the JSON is
    written as its ``\\u`` escape, so no string of it (a class or display name with ``</script>``
    or ``<!--``) can end the script element or switch the HTML parser into a comment state."""
    text = json.dumps(data, separators=(",", ":"))
    for char in "<>&":
        text = text.replace(char, f"\\u{ord(char):04x}")
    # The data first: once inline it holds no "<", so the title mark cannot appear inside it.
    return TEMPLATE.read_text().replace(DATA_MARK, text).replace(TITLE_MARK, html.escape(title))


def explorer_page(
    model: dict,
    preprocessing: dict,
    stimuli_table: str,
    images_dir: str,
    labels_table: str | None,
    settings: dict,
    output: str,
) -> None:
    data = page_data(model, preprocessing, stimuli_table, images_dir, labels_table, settings)
    with atomic_path(output) as tmp:
        tmp.write_text(render(data, f"{model['display_name']}: token explorer"), encoding="utf-8")
    log.info("%s: %d images, %.2f MB", output, len(data["images"]), Path(output).stat().st_size / 1e6)


def explorer_index(models: list[dict], pages: list[str], output: str) -> None:
    """A page linking every model's explorer page (pages beside it)."""
    items = "\n".join(
        f'<li><a href="{html.escape(Path(page).name)}">{html.escape(model["display_name"])}</a> '
        f"({html.escape(model['name'])}, {Path(page).stat().st_size / 1e6:.1f} MB)</li>"
        for model, page in zip(models, pages)
    )
    text = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>Token explorer</title></head>\n'
        "<body><h1>Token explorer</h1>\n<p>Every token of every block of a set of images, per model: "
        "opened from disk, no network needed.</p>\n"
        f"<ul>\n{items}\n</ul></body></html>\n"
    )
    with atomic_path(output) as tmp:
        tmp.write_text(text, encoding="utf-8")
