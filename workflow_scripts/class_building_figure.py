from class_embedding import logs
from class_embedding.analyses import class_building_statistics
from class_embedding.figures import class_building_figures

with logs.logged(snakemake):
    # Figures draw (figures module); the table is statistics only (analyses module).
    module = class_building_statistics if snakemake.rule.startswith("tab_") else class_building_figures
    target = getattr(module, snakemake.rule)
    target(output=snakemake.output, **dict(snakemake.params.items()))
