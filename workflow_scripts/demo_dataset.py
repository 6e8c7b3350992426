from class_embedding import demo_dataset, logs

with logs.logged(snakemake):
    demo_dataset.write_from_spec(
        snakemake.output.images,
        snakemake.output.categories,
        spec=snakemake.params.spec,
        seed=snakemake.params.seed,
    )
