from class_embedding import logs, perturbation_tables

with logs.logged(snakemake):
    target = getattr(perturbation_tables, snakemake.rule)
    target(models=snakemake.params.models, output=snakemake.output)
