import torch

from class_embedding import logs, models, probes, tables

with logs.logged(snakemake):
    spec, name = snakemake.params.spec, snakemake.wildcards.model
    settings, extraction = snakemake.params.probing, snakemake.params.extraction
    torch.set_num_threads(max(snakemake.threads, 1))
    model = models.load_checkpoint(models.build_model(spec, name), snakemake.input.checkpoint, name)
    ranks, accuracy, info = probes.run_probes(
        model,
        name,
        tables.read_table(snakemake.input.probe_stimuli),
        tables.read_table(snakemake.input.stimuli),
        snakemake.input.images,
        models.Preprocessing(spec["preprocessing"]),
        alpha=settings["alpha"],
        batch_size=settings["batch_size"],
        device=models.pick_device(extraction["device"]),
        workers=extraction["workers"],
        memory_bytes=settings["memory_gb"] * 1e9,
    )
    metadata = {
        **models.model_metadata(spec, name, snakemake.input.checkpoint),
        **info,
        "probe_stimuli": snakemake.input.probe_stimuli,
        "stimuli": snakemake.input.stimuli,
        "targets": "±1 (ridge regression, intercept, closed form in float64)",
    }
    tables.write_table(ranks, snakemake.output.ranks, metadata)
    tables.write_table(accuracy, snakemake.output.accuracy, metadata)
