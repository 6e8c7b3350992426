from class_embedding import logs
from class_embedding.models import ModelSpec, building, checkpoints

with logs.logged(snakemake):
    spec = ModelSpec.from_params(snakemake.params.spec, snakemake.wildcards.model)
    model = building.random_model(spec, snakemake.wildcards.model, spec.weights["seed"])
    checkpoints.save_checkpoint(model, snakemake.output[0])
