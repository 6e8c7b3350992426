import torch

from class_embedding import logs
from class_embedding.extraction import weight_check
from class_embedding.figures import tutorial_figures
from class_embedding.models import building, checkpoints

with logs.logged(snakemake):
    torch.set_num_threads(max(snakemake.threads, 1))
    name, spec, figure = snakemake.params.model, snakemake.params.spec, snakemake.params.figure
    sample = weight_check.resolve_sample(
        figure["image"],
        snakemake.params.sample,
        file=snakemake.input.get("sample"),
        stimuli=snakemake.input.get("stimuli"),
        images=snakemake.input.get("images"),
    )
    model = checkpoints.load_checkpoint(building.build_model(spec, name), snakemake.input.checkpoint, name)
    if snakemake.rule == "fig_tutorial_cls_logits":
        tutorial_figures.fig_tutorial_cls_logits(
            model, name, spec, sample, figure["block"], snakemake.params.x_label, snakemake.output
        )
    else:
        tutorial_figures.fig_tutorial_heatmap(
            model, name, spec, sample, snakemake.params.loss, snakemake.params.swap_red_blue, snakemake.output
        )
