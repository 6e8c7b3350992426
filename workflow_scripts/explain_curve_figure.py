from class_embedding import logs
from class_embedding.figures import explain_curve_figures

with logs.logged(snakemake):
    target = getattr(explain_curve_figures, snakemake.rule)
    target(output=snakemake.output, **dict(snakemake.params.items()))
