from class_embedding import logs
from class_embedding.extraction import model_audit
from class_embedding.models import pretrained

with logs.logged(snakemake):
    spec, name, cache = snakemake.params.spec, snakemake.wildcards.model, snakemake.params.cache
    finetune = snakemake.rule == "fetch_finetune_init"
    tag = spec["weights"]["finetune"]["init_tag"] if finetune else spec["weights"]["tag"]
    # Offline and not in the weight cache: fails in seconds, before the imports of torch and timm,
    # naming the tag and the two ways to supply the weights (never retried: the rule sets retries: 0).
    pretrained.check_available(name, tag, cache, finetune)

    import torch

    from class_embedding.models import checkpoints

    if finetune:
        # The fine-tuning start: pretrained backbone, a new (seeded) head of the configured size.
        torch.manual_seed(snakemake.params.seed)
        model = pretrained.load_timm_weights(spec, name, tag, cache, finetune=True, num_classes=spec["num_classes"])
    else:
        model = pretrained.load_timm_weights(spec, name, tag, cache)
        model_audit.audit(model, name)
    checkpoints.save_checkpoint(model, snakemake.output[0])
