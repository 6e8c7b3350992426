from class_embedding import logs, memory_figures

with logs.logged(snakemake):
    target = getattr(memory_figures, snakemake.rule)
    target(
        models=snakemake.params.models,
        output=snakemake.output,
        seed=snakemake.params.seed,
        **snakemake.params.options,
    )
