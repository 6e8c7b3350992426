from class_embedding import logs, tables
from class_embedding.data import user_inputs

with logs.logged(snakemake):
    checked = user_inputs.check_user_inputs(snakemake.params.datasets, set(snakemake.params.finetuned_datasets))
    tables.write_json(checked, snakemake.output[0])
