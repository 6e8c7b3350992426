from class_embedding import logs
from class_embedding.extraction import shards

with logs.logged(snakemake):
    outputs = dict(zip(snakemake.params.layers, snakemake.output.layers))
    outputs["predictions"] = snakemake.output.predictions
    shards.merge_shards(list(snakemake.input), outputs)
