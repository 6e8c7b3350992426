from class_embedding import logs, tables
from class_embedding.extraction import weight_check

with logs.logged(snakemake):
    name, expected = snakemake.wildcards.model, snakemake.params.expected
    spec, model, sample = weight_check.job_model_and_sample(snakemake, name, expected["image"])
    report = weight_check.check_weights(model, name, spec, expected, sample)
    tables.write_json(report, snakemake.output[0])
