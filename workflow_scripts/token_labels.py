from pathlib import Path

from class_embedding import logs, tables
from class_embedding.data import imagenet_s

with logs.logged(snakemake):
    grid = int(snakemake.wildcards.grid)
    labels = imagenet_s.token_label_table(
        tables.read_table(snakemake.input.stimuli),
        Path(snakemake.input.images).parent,
        snakemake.input.categories,
        grid,
    )
    tables.write_table(labels, snakemake.output[0], {"token_grid": grid})
