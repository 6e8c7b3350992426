from pathlib import Path

from class_embedding import logs, tables
from class_embedding.data import folder_masks, imagenet_s
from class_embedding.models.tokens import TokenLayout
from class_embedding.token_grid import parse_grid_name

with logs.logged(snakemake):
    layout = TokenLayout(parse_grid_name(snakemake.wildcards.grid), class_token=False)
    grid = layout.token_grid
    stimuli = tables.read_table(snakemake.input.stimuli)
    if "masks" in snakemake.input.keys():
        labels = folder_masks.token_label_table(stimuli, snakemake.input.masks, grid)
    else:
        labels = imagenet_s.token_label_table(
            stimuli, Path(snakemake.input.images).parent, snakemake.input.categories, grid
        )
    tables.write_table(labels, snakemake.output[0], {"token_grid": layout.metadata()["token_grid"]})
