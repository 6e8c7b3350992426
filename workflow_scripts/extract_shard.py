import torch

from class_embedding import extraction, logs, models, tables

with logs.logged(snakemake):
    spec, name = snakemake.params.spec, snakemake.wildcards.model
    settings = snakemake.params.extraction
    torch.set_num_threads(max(snakemake.threads, 1))
    stimuli = tables.read_table(snakemake.input.stimuli)
    shard = int(snakemake.wildcards.shard)
    start, stop = extraction.shard_ranges(len(stimuli), settings["shard_size"])[shard]
    model = models.load_checkpoint(models.build_model(spec, name), snakemake.input.checkpoint, name)
    extraction.extract_shard(
        model,
        stimuli.slice(start, stop - start),
        snakemake.input.images,
        models.Preprocessing(spec["preprocessing"]),
        snakemake.output[0],
        batch_size=settings["batch_size"],
        device=models.pick_device(settings["device"]),
        workers=settings["workers"],
        description=f"{name} shard {shard}",
        metadata={
            **models.model_metadata(spec, name, snakemake.input.checkpoint),
            "stimuli": snakemake.input.stimuli,
        },
    )
