from class_embedding import explain_curve_figures, logs

with logs.logged(snakemake):
    target = getattr(explain_curve_figures, snakemake.rule)
    target(output=snakemake.output, **dict(snakemake.params.items()))
