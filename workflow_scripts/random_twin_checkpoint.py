from class_embedding import logs, models

with logs.logged(snakemake):
    spec = snakemake.params.spec
    model = models.random_model(spec, snakemake.wildcards.model, spec["weights"]["seed"])
    models.save_checkpoint(model, snakemake.output[0])
