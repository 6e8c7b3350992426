from class_embedding import logs, tables
from class_embedding.extraction import shards
from class_embedding.models import ModelSpec, building, preprocessing
from class_embedding.run_settings import job_settings

with logs.logged(snakemake):
    name = snakemake.wildcards.model
    spec = ModelSpec.from_params(snakemake.params.spec, name)
    settings = job_settings(snakemake, "extraction")
    stimuli = tables.read_table(snakemake.input.stimuli)
    shard = int(snakemake.wildcards.shard)
    start, stop = shards.shard_ranges(len(stimuli), settings["shard_size"])[shard]
    model = building.load_model(spec, name, snakemake.input.checkpoint)
    shards.extract_shard(
        model,
        stimuli.slice(start, stop - start),
        snakemake.input.images,
        preprocessing.Preprocessing(spec.preprocessing),
        snakemake.output[0],
        batch_size=settings["batch_size"],
        device=building.pick_device(settings["device"]),
        workers=settings["workers"],
        description=f"{name} shard {shard}",
        metadata={
            **building.model_metadata(spec, name, snakemake.input.checkpoint),
            "stimuli": snakemake.input.stimuli,
        },
    )
