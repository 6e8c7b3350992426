from class_embedding import logs
from class_embedding.analyses import reproduction

with logs.logged(snakemake):
    reproduction.tab_reproduction_vs_paper(
        snakemake.input.rates, snakemake.input.random, snakemake.params.reference, snakemake.output.csv
    )
