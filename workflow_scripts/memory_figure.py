from class_embedding import logs
from class_embedding.figures import memory_figures

with logs.logged(snakemake):
    target = getattr(memory_figures, snakemake.rule)
    target(
        models=snakemake.params.models,
        output=snakemake.output,
        seed=snakemake.params.seed,
        n_permutations=snakemake.params.n_permutations,
        n_bootstrap=snakemake.params.n_bootstrap,
        **snakemake.params.options,
    )
