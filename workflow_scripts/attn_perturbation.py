import torch

from class_embedding import logs, perturbation

with logs.logged(snakemake):
    torch.set_num_threads(max(snakemake.threads, 1))
    setup = perturbation.Setup.load(
        snakemake.params.spec,
        snakemake.wildcards.model,
        snakemake.input.checkpoint,
        snakemake.input.stimuli,
        snakemake.input.images,
    )
    perturbation.run_attention(setup, snakemake.wildcards.type, snakemake.output, snakemake.params.extraction)
