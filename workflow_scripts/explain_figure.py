from class_embedding import logs
from class_embedding.figures import explain_figures

with logs.logged(snakemake):
    explained = explain_figures.Explained.load(
        snakemake.params.model,
        snakemake.params.spec,
        snakemake.input.checkpoint,
        snakemake.input.stimuli,
        snakemake.input.images,
        snakemake.params.explainability["loss"],
    )
    target = getattr(explain_figures, snakemake.rule)
    target(explained, snakemake.params.explainability["figures"], snakemake.output)
