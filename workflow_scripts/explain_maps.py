from class_embedding import logs
from class_embedding.analyses import gradients, model_runs
from class_embedding.run_settings import job_settings

with logs.logged(snakemake):
    setup = model_runs.Setup.for_job(snakemake)
    gradients.run_maps(
        setup, snakemake.output[0], job_settings(snakemake, "explainability"), job_settings(snakemake, "extraction")
    )
