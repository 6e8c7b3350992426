# Extraction: one GPU job per (model, image shard), each reducing every block's states in one
# forward pass; then one merge per model into results/extract/model=<m>/layer=<kind>/block=<b>/.


rule extract_shard:
    input:
        unpack(by_model(stimulus_run_inputs)),
        # Known values on a sample image first, when the config gives them (rules/checks.smk).
        weight_check=by_model(weight_check_file),
    output:
        temp(directory(layout.extraction_shard("{model}", "{shard}"))),
    log:
        "results/logs/extract_shard/{model}_{shard}.log",
    benchmark:
        "results/benchmarks/extract_shard/{model}_{shard}.tsv"
    conda:
        "../envs/extraction.yaml"
    threads: 4  # CPU threads of torch (or data loading on a GPU); capped by --cores
    resources:
        **gpu_job(mem_mb=8000, runtime=60),
    params:
        **stimulus_run_params(),
    script:
        "../workflow_scripts/extract_shard.py"


for merged_model in MODELS:

    rule:
        name:
            f"merge_extraction_{merged_model}"
        input:
            shard_inputs(merged_model),
        output:
            layers=layer_table_list(merged_model),
            predictions=layout.predictions_table(merged_model),
        log:
            f"results/logs/merge_extraction/{merged_model}.log",
        conda:
            "../envs/extraction.yaml"
        params:
            model=merged_model,
            layers=layer_names(merged_model),
        script:
            "../workflow_scripts/merge_extraction.py"
