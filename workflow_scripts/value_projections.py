from class_embedding import logs, memories, models

with logs.logged(snakemake):
    spec, name, seed = snakemake.params.spec, snakemake.wildcards.model, snakemake.params.seed
    model = models.load_checkpoint(models.build_model(spec, name), snakemake.input.checkpoint, name)
    # A second, independent random initialisation (METHOD §4.11a), never the random twin.
    baseline_seed = memories.value_baseline_seed(seed, name)
    baseline = models.random_model(spec, f"{name}_value_baseline", baseline_seed)
    memories.write_value_projections(
        model,
        baseline,
        snakemake.output.classes,
        snakemake.output.memories,
        metadata={
            "model": name,
            "weights_sha256": models.sha256(snakemake.input.checkpoint),
            "value_baseline_seed": baseline_seed,
            "value_variants": ["with post-norm" if v else "plain" for v in memories.value_variants(model)],
        },
    )
