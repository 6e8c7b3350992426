# Perturbation experiments on the trained [CLS] models (METHOD §4.9, §4.10): attention perturbed in
# every block, and only [CLS] plus class- or context-labelled tokens entering the first block.
# One GPU job per (model, perturbation) writes results/perturbation/<model>/<name>.parquet (rank of
# the correct class for every token of the last block) and <name>_predictions.parquet; two tables
# compare them with the unperturbed extraction.

PERTURBATION_MODELS = [
    m
    for m in config["perturbation"]["models"] or SEGMENTED_MODELS
    if m in SEGMENTED_MODELS and MODELS[m]["class_token"]
]
PERTURBATION_TABLE_MODELS = [
    {**describe_model(m), "perturbation_dir": f"results/perturbation/{m}"}
    for m in PERTURBATION_MODELS
]
# What the tables compare with: the last residual stream and predictions of the extraction.
UNPERTURBED_LAST_BLOCKS = [
    f"{extract_dir(m)}/{name}.parquet"
    for m in PERTURBATION_MODELS
    for name in (f"hs_{MODELS[m]['num_blocks'] - 1}", "predictions")
]


rule attn_perturbation:
    input:
        unpack(lambda wildcards: dataset_files(model_dataset(wildcards.model))),
        stimuli=lambda wildcards: stimuli_table(wildcards.model),
        checkpoint=lambda wildcards: checkpoint_path(wildcards.model),
    output:
        ranks="results/perturbation/{model}/attn_{type}.parquet",
        predictions="results/perturbation/{model}/attn_{type}_predictions.parquet",
    wildcard_constraints:
        model=alternatives(PERTURBATION_MODELS),
        type="self_only|no_cls",
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
        "results/logs/attn_perturbation/{model}_{type}.log",
    benchmark:
        "results/benchmarks/attn_perturbation/{model}_{type}.tsv"
    script:
        "../workflow_scripts/attn_perturbation.py"


rule token_perturbation:
    input:
        unpack(lambda wildcards: dataset_files(model_dataset(wildcards.model))),
        stimuli=lambda wildcards: stimuli_table(wildcards.model),
        checkpoint=lambda wildcards: checkpoint_path(wildcards.model),
        token_labels=lambda wildcards: describe_model(wildcards.model)["token_labels"],
    output:
        ranks="results/perturbation/{model}/tokens_no_{mask}.parquet",
        predictions="results/perturbation/{model}/tokens_no_{mask}_predictions.parquet",
    wildcard_constraints:
        model=alternatives(PERTURBATION_MODELS),
        mask="context|class_label",
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
        "results/logs/token_perturbation/{model}_{mask}.log",
    benchmark:
        "results/benchmarks/token_perturbation/{model}_{mask}.tsv"
    script:
        "../workflow_scripts/token_perturbation.py"


rule tab_attn_perturbation:
    input:
        [
            f"results/perturbation/{m}/attn_{kind}{suffix}.parquet"
            for m in PERTURBATION_MODELS
            for kind in ("self_only", "no_cls")
            for suffix in ("", "_predictions")
        ],
        UNPERTURBED_LAST_BLOCKS,
    output:
        csv=report(
            "results/tables/tab_attn_perturbation.csv",
            caption="../report/tab_attn_perturbation.rst",
            category="Perturbation",
        ),
    params:
        models=PERTURBATION_TABLE_MODELS,
    conda:
        "../envs/plotting.yaml"
    log:
        "results/logs/tables/tab_attn_perturbation.log",
    script:
        "../workflow_scripts/perturbation_table.py"


rule tab_context_perturbation:
    input:
        [
            f"results/perturbation/{m}/tokens_no_{mask}{suffix}.parquet"
            for m in PERTURBATION_MODELS
            for mask in ("context", "class_label")
            for suffix in ("", "_predictions")
        ],
        UNPERTURBED_LAST_BLOCKS,
        [describe_model(m)["token_labels"] for m in PERTURBATION_MODELS],
    output:
        csv=report(
            "results/tables/tab_context_perturbation.csv",
            caption="../report/tab_context_perturbation.rst",
            category="Perturbation",
        ),
    params:
        models=PERTURBATION_TABLE_MODELS,
    conda:
        "../envs/plotting.yaml"
    log:
        "results/logs/tables/tab_context_perturbation.log",
    script:
        "../workflow_scripts/perturbation_table.py"
