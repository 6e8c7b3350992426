import json

import torch

from class_embedding import logs, models, training
from class_embedding.tables import atomic_path

with logs.logged(snakemake):
    torch.set_num_threads(snakemake.threads)
    spec, name = snakemake.params.spec, snakemake.wildcards.model
    torch.manual_seed(snakemake.params.seed)
    model = models.build_model(spec, name)
    report = training.train(
        model,
        snakemake.input.images,
        models.Preprocessing(spec["preprocessing"]),
        seed=snakemake.params.seed,
        **snakemake.params.training,
    )
    with atomic_path(snakemake.output.report) as tmp:
        tmp.write_text(json.dumps({"model": name, **report}, indent=2))
    models.save_checkpoint(model, snakemake.output.checkpoint)
