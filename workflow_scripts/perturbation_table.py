from class_embedding import logs
from class_embedding.analyses import perturbation_tables

with logs.logged(snakemake):
    target = getattr(perturbation_tables, snakemake.rule)
    target(models=snakemake.params.models, output=snakemake.output)
