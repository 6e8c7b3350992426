import json

import torch

from class_embedding import logs
from class_embedding.models import ModelSpec, building, checkpoints, preprocessing, training
from class_embedding.tables import atomic_path

with logs.logged(snakemake):
    name = snakemake.wildcards.model
    spec = ModelSpec.from_params(snakemake.params.spec, name)
    torch.manual_seed(snakemake.params.seed)
    model = building.build_model(spec, name)
    report = training.train(
        model,
        snakemake.input.images,
        preprocessing.Preprocessing(spec.preprocessing),
        seed=snakemake.params.seed,
        **snakemake.params.training,
    )
    with atomic_path(snakemake.output.report) as tmp:
        tmp.write_text(json.dumps({"model": name, **report}, indent=2))
    checkpoints.save_checkpoint(model, snakemake.output.checkpoint)
