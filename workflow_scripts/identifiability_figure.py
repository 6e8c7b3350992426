from class_embedding import logs
from class_embedding.figures import identifiability_figures

with logs.logged(snakemake):
    target = getattr(identifiability_figures, snakemake.rule)
    target(models=snakemake.params.models, output=snakemake.output, seed=snakemake.params.seed)
