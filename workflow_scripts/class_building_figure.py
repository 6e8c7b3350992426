from class_embedding import logs
from class_embedding.figures import class_building_figures

with logs.logged(snakemake):
    target = getattr(class_building_figures, snakemake.rule)
    target(output=snakemake.output, **dict(snakemake.params.items()))
