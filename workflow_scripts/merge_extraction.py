from class_embedding import extraction, logs

with logs.logged(snakemake):
    outputs = dict(zip(snakemake.params.layers, snakemake.output.layers))
    outputs["predictions"] = snakemake.output.predictions
    extraction.merge_shards(list(snakemake.input), outputs)
