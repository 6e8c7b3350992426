from class_embedding import logs
from class_embedding.analyses import explain_perturbation, model_runs
from class_embedding.run_settings import job_settings

with logs.logged(snakemake):
    setup = model_runs.Setup.for_job(snakemake)
    explain_perturbation.run_perturbation(
        setup,
        snakemake.input.maps,
        snakemake.input.get("probe_ranks"),
        snakemake.output,
        job_settings(snakemake, "explainability"),
        job_settings(snakemake, "extraction"),
    )
