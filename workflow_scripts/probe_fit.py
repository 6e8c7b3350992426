from class_embedding import logs, tables
from class_embedding.analyses import probes
from class_embedding.models import ModelSpec, building, preprocessing
from class_embedding.run_settings import job_settings

with logs.logged(snakemake):
    name = snakemake.wildcards.model
    spec = ModelSpec.from_params(snakemake.params.spec, name)
    settings, extraction = job_settings(snakemake, "probing"), job_settings(snakemake, "extraction")
    model = building.load_model(spec, name, snakemake.input.checkpoint)
    ranks, accuracy, info = probes.run_probes(
        model,
        name,
        tables.read_table(snakemake.input.probe_stimuli),
        tables.read_table(snakemake.input.stimuli),
        snakemake.input.images,
        preprocessing.Preprocessing(spec.preprocessing),
        alpha=settings["alpha"],
        batch_size=settings["batch_size"],
        device=building.pick_device(extraction["device"]),
        workers=extraction["workers"],
        memory_bytes=settings["memory_gb"] * 1e9,
    )
    metadata = {
        **building.model_metadata(spec, name, snakemake.input.checkpoint),
        **info,
        "probe_stimuli": snakemake.input.probe_stimuli,
        "stimuli": snakemake.input.stimuli,
        "targets": "±1 (ridge regression, intercept, closed form in float64)",
    }
    tables.write_table(ranks, snakemake.output.ranks, metadata)
    tables.write_table(accuracy, snakemake.output.accuracy, metadata)
