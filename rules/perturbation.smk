# Perturbation experiments on the trained [CLS] models (docs/method.md §4.9, §4.10): attention perturbed in
# every block, and only [CLS] plus class- or context-labelled tokens entering the first block.
# One GPU job per (model, perturbation) writes results/perturbation/model=<m>/perturbation=<name>/
# ranks.parquet (rank of the correct class for every token of the last block) and predictions.parquet; two tables
# compare them with the unperturbed extraction.

# What the tables compare with: the last residual stream and predictions of the extraction.
UNPERTURBED_LAST_BLOCKS = [
    path
    for m in PERTURBATION_MODELS
    for path in (layer_tables(m)[f"hs_{MODELS[m]['num_blocks'] - 1}"], layout.predictions_table(m))
]


# One rule per experiment (a script: directive in a loop would run the last loop value's script).
rule attn_perturbation:
    input:
        unpack(by_model(stimulus_run_inputs)),
    output:
        **perturbation_outputs("attn_perturbation"),
    log:
        "results/logs/attn_perturbation/{model}_{type}.log",
    benchmark:
        "results/benchmarks/attn_perturbation/{model}_{type}.tsv"
    wildcard_constraints:
        model=alternatives(PERTURBATION_MODELS),
        type=alternatives(PERTURBATION_EXPERIMENTS["attn_perturbation"]["variants"]["type"]),
    conda:
        "../envs/extraction.yaml"
    threads: 4
    resources:
        **gpu_job(mem_mb=8000, runtime=60),
    params:
        **stimulus_run_params(),
    script:
        "../workflow_scripts/attn_perturbation.py"


rule token_perturbation:
    input:
        unpack(by_model(stimulus_run_inputs)),
        token_labels=by_model(token_labels_table),
    output:
        **perturbation_outputs("token_perturbation"),
    log:
        "results/logs/token_perturbation/{model}_{mask}.log",
    benchmark:
        "results/benchmarks/token_perturbation/{model}_{mask}.tsv"
    wildcard_constraints:
        model=alternatives(PERTURBATION_MODELS),
        mask=alternatives(PERTURBATION_EXPERIMENTS["token_perturbation"]["variants"]["mask"]),
    conda:
        "../envs/extraction.yaml"
    threads: 4
    resources:
        **gpu_job(mem_mb=8000, runtime=60),
    params:
        **stimulus_run_params(),
    script:
        "../workflow_scripts/token_perturbation.py"


for _table, _experiment in PERTURBATION_TABLES.items():
    _variants = PERTURBATION_EXPERIMENTS[_experiment]["variants"]
    _token_labels = PERTURBATION_EXPERIMENTS[_experiment]["token_labels"]

    rule:
        name:
            _table
        input:
            expand(getattr(rules, _experiment).output, model=PERTURBATION_MODELS, **_variants),
            UNPERTURBED_LAST_BLOCKS,
            [token_labels_table(m) for m in PERTURBATION_MODELS] if _token_labels else [],
        output:
            **figure_outputs(_table, "Perturbation"),
        log:
            f"results/logs/tables/{_table}.log",
        group:
            FIGURE_GROUP
        conda:
            "../envs/plotting.yaml"
        params:
            models=descriptions(PERTURBATION_MODELS),
        script:
            "../workflow_scripts/perturbation_table.py"
