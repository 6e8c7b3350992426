import json

from class_embedding import logs
from class_embedding.data import cifar
from class_embedding.extraction import model_audit
from class_embedding.models import ModelSpec, building, checkpoints, preprocessing

with logs.logged(snakemake):
    name = snakemake.wildcards.model
    spec = ModelSpec.from_params(snakemake.params.spec, name)
    settings = spec.weights["finetune"]
    model = building.load_model(spec, name, snakemake.input.init)
    model = cifar.finetune(
        model,
        snakemake.input.pickles,
        preprocessing.Preprocessing(spec.preprocessing),
        settings,
        snakemake.params.seed,
        building.pick_device(snakemake.config["extraction"]["device"]),  # a resource, not a param,
    ).cpu()
    model_audit.audit(model, name)
    checkpoints.save_checkpoint(model, snakemake.output.checkpoint)
    with open(snakemake.output.report, "w") as handle:
        json.dump({"init_tag": settings["init_tag"], **settings, "seed": snakemake.params.seed}, handle, indent=1)
