import torch

from class_embedding import logs, tables
from class_embedding.extraction import weight_check
from class_embedding.models import building, checkpoints

with logs.logged(snakemake):
    torch.set_num_threads(max(snakemake.threads, 1))
    name, spec, expected = snakemake.wildcards.model, snakemake.params.spec, snakemake.params.expected
    sample = weight_check.resolve_sample(
        expected["image"],
        snakemake.params.sample,
        file=snakemake.input.get("sample"),
        stimuli=snakemake.input.get("stimuli"),
        images=snakemake.input.get("images"),
    )
    model = checkpoints.load_checkpoint(building.build_model(spec, name), snakemake.input.checkpoint, name)
    report = weight_check.check_weights(model, name, spec, expected, sample)
    tables.write_json(report, snakemake.output[0])
