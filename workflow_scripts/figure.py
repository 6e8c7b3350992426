from class_embedding import figures, logs

with logs.logged(snakemake):
    target = getattr(figures, snakemake.rule)
    target(models=snakemake.params.models, output=snakemake.output, seed=snakemake.params.seed)
