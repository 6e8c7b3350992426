import torch

from class_embedding import gradients, logs, perturbation

with logs.logged(snakemake):
    torch.set_num_threads(max(snakemake.threads, 1))
    setup = perturbation.Setup.load(
        snakemake.params.spec,
        snakemake.wildcards.model,
        snakemake.input.checkpoint,
        snakemake.input.stimuli,
        snakemake.input.images,
    )
    gradients.run_maps(setup, snakemake.output[0], snakemake.params.explainability, snakemake.params.extraction)
