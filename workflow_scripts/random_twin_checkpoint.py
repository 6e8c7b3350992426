from class_embedding import logs
from class_embedding.models import building, checkpoints

with logs.logged(snakemake):
    spec = snakemake.params.spec
    model = building.random_model(spec, snakemake.wildcards.model, spec["weights"]["seed"])
    checkpoints.save_checkpoint(model, snakemake.output[0])
