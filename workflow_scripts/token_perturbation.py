from class_embedding import logs
from class_embedding.analyses import model_runs, perturbation
from class_embedding.run_settings import job_settings

with logs.logged(snakemake):
    setup = model_runs.Setup.for_job(snakemake)
    perturbation.run_tokens(
        setup,
        snakemake.wildcards.mask,
        snakemake.input.token_labels,
        snakemake.output,
        job_settings(snakemake, "extraction"),
    )
