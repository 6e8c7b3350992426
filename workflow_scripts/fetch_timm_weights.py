import torch

from class_embedding import logs, models

with logs.logged(snakemake):
    spec, name = snakemake.params.spec, snakemake.wildcards.model
    weights = spec["weights"]
    if snakemake.rule == "fetch_finetune_init":
        # The fine-tuning start: pretrained backbone, a new (seeded) head of the configured size.
        torch.manual_seed(snakemake.params.seed)
        model = models.timm_pretrained(
            spec, name, weights["finetune"]["init_tag"], snakemake.params.cache, num_classes=spec["num_classes"]
        )
    else:
        model = models.timm_pretrained(spec, name, weights["tag"], snakemake.params.cache)
        models.audit(model, name)
    models.save_checkpoint(model, snakemake.output[0])
