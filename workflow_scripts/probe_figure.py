from class_embedding import logs
from class_embedding.figures import probe_figures

with logs.logged(snakemake):
    target = getattr(probe_figures, snakemake.rule)
    target(output=snakemake.output, **dict(snakemake.input.items()), **dict(snakemake.params.items()))
