from class_embedding import logs
from class_embedding.extraction import shard_merge

with logs.logged(snakemake):
    outputs = dict(zip(snakemake.params.layers, snakemake.output.layers))
    outputs["predictions"] = snakemake.output.predictions
    shard_merge.merge_shards(list(snakemake.input), outputs)
