import json

import torch

from class_embedding import cifar, logs, models

with logs.logged(snakemake):
    spec, name = snakemake.params.spec, snakemake.wildcards.model
    settings = spec["weights"]["finetune"]
    torch.set_num_threads(max(snakemake.threads, 1))
    model = models.load_checkpoint(models.build_model(spec, name), snakemake.input.init, name)
    model = cifar.finetune(
        model,
        snakemake.input.pickles,
        models.Preprocessing(spec["preprocessing"]),
        settings,
        snakemake.params.seed,
        models.pick_device(snakemake.params.device),
    ).cpu()
    models.audit(model, name)
    models.save_checkpoint(model, snakemake.output.checkpoint)
    with open(snakemake.output.report, "w") as handle:
        json.dump({"init_tag": settings["init_tag"], **settings, "seed": snakemake.params.seed}, handle, indent=1)
