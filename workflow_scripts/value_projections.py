from class_embedding import logs
from class_embedding.analyses import memories, value_projections
from class_embedding.models import building, checkpoints

with logs.logged(snakemake):
    spec, name, seed = snakemake.params.spec, snakemake.wildcards.model, snakemake.params.seed
    model = building.load_model(spec, name, snakemake.input.checkpoint)
    # A second, independent random initialisation (docs/method.md §4.11a), never the random twin.
    baseline_seed = memories.value_baseline_seed(seed, name)
    baseline = building.random_model(spec, f"{name}_value_baseline", baseline_seed)
    value_projections.write_value_projections(
        model,
        baseline,
        snakemake.output.classes,
        snakemake.output.memories,
        metadata={
            "model": name,
            "weights_sha256": checkpoints.sha256(snakemake.input.checkpoint),
            "value_baseline_seed": baseline_seed,
            "value_variants": ["with post-norm" if v else "plain" for v in value_projections.value_variants(model)],
        },
    )
