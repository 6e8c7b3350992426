# Extraction: one GPU job per (model, image shard), each reducing every block's states in one
# forward pass; then one merge per model into results/extract/<model>/<layer>.parquet.


rule extract_shard:
    input:
        unpack(lambda wildcards: dataset_files(model_dataset(wildcards.model))),
        stimuli=lambda wildcards: stimuli_table(wildcards.model),
        checkpoint=lambda wildcards: checkpoint_path(wildcards.model),
        # Known values on a sample image first, when the config gives them (rules/checks.smk).
        weight_check=lambda wildcards: weight_check_file(wildcards.model),
    output:
        temp(directory("results/extract/{model}/shards/{shard}")),
    params:
        spec=lambda wildcards: MODELS[wildcards.model],
        extraction=config["extraction"],
    threads: 4  # CPU threads of torch (or data loading on a GPU); capped by --cores
    resources:
        gpu=1,
        mem_mb=lambda wildcards, attempt: 8000 * attempt,
        runtime=lambda wildcards, attempt: 60 * attempt,
    conda:
        "../envs/extraction.yaml"
    log:
        "results/logs/extract_shard/{model}_{shard}.log",
    benchmark:
        "results/benchmarks/extract_shard/{model}_{shard}.tsv"
    script:
        "../workflow_scripts/extract_shard.py"


for merged_model in MODELS:

    rule:
        name:
            f"merge_extraction_{merged_model}"
        input:
            lambda wildcards, model=merged_model: shard_dirs(model),
        output:
            layers=layer_tables(merged_model),
            predictions=f"{extract_dir(merged_model)}/predictions.parquet",
        params:
            model=merged_model,
            layers=layer_names(merged_model),
        conda:
            "../envs/extraction.yaml"
        log:
            f"results/logs/merge_extraction/{merged_model}.log",
        script:
            "../workflow_scripts/merge_extraction.py"
