import torch

from class_embedding import logs
from class_embedding.models import building, checkpoints

with logs.logged(snakemake):
    spec, name = snakemake.params.spec, snakemake.wildcards.model
    weights = spec["weights"]
    if snakemake.rule == "fetch_finetune_init":
        # The fine-tuning start: pretrained backbone, a new (seeded) head of the configured size.
        torch.manual_seed(snakemake.params.seed)
        model = building.timm_pretrained(
            spec, name, weights["finetune"]["init_tag"], snakemake.params.cache, num_classes=spec["num_classes"]
        )
    else:
        model = building.timm_pretrained(spec, name, weights["tag"], snakemake.params.cache)
        building.audit(model, name)
    checkpoints.save_checkpoint(model, snakemake.output[0])
