from class_embedding import class_building_figures, logs

with logs.logged(snakemake):
    target = getattr(class_building_figures, snakemake.rule)
    target(output=snakemake.output, **dict(snakemake.params.items()))
