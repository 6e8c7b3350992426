from class_embedding import logs
from class_embedding.extraction import weight_check
from class_embedding.figures import tutorial_figures

with logs.logged(snakemake):
    name, figure = snakemake.params.model, snakemake.params.figure
    spec, model, sample = weight_check.job_model_and_sample(snakemake, name, figure["image"])
    if snakemake.rule == "fig_tutorial_cls_logits":
        tutorial_figures.fig_tutorial_cls_logits(
            model, name, spec, sample, figure["block"], snakemake.params.x_label, snakemake.output
        )
    else:
        tutorial_figures.fig_tutorial_heatmap(
            model, name, spec, sample, snakemake.params.loss, snakemake.params.swap_red_blue, snakemake.output
        )
