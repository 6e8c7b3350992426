# Perturbation experiments on the trained [CLS] models (METHOD §4.9, §4.10): attention perturbed in
# every block, and only [CLS] plus class- or context-labelled tokens entering the first block.
# One GPU job per (model, perturbation) writes results/perturbation/<model>/<name>.parquet (rank of
# the correct class for every token of the last block) and <name>_predictions.parquet; two tables
# compare them with the unperturbed extraction.

# What the tables compare with: the last residual stream and predictions of the extraction.
UNPERTURBED_LAST_BLOCKS = [
    f"{model_dir('extract', m)}/{name}.parquet"
    for m in PERTURBATION_MODELS
    for name in (f"hs_{MODELS[m]['num_blocks'] - 1}", "predictions")
]


for _name, _experiment in PERTURBATION_EXPERIMENTS.items():
    _stem = f"{model_dir('perturbation', '{model}')}/{_experiment['stem']}"

    rule:
        name:
            _name
        input:
            unpack(model_stimulus_run_inputs),
            **_experiment["inputs"],
        output:
            ranks=f"{_stem}.parquet",
            predictions=f"{_stem}_predictions.parquet",
        wildcard_constraints:
            model=alternatives(PERTURBATION_MODELS),
            **{_experiment["wildcard"]: "|".join(_experiment["variants"])},
        params:
            **stimulus_run_params(),
        threads: 4
        resources:
            **gpu_job(mem_mb=8000, runtime=60),
        conda:
            "../envs/extraction.yaml"
        log:
            f"results/logs/{_name}/{{model}}_{{{_experiment['wildcard']}}}.log",
        benchmark:
            f"results/benchmarks/{_name}/{{model}}_{{{_experiment['wildcard']}}}.tsv"
        script:
            f"../workflow_scripts/{_name}.py"


for _table, _experiment in PERTURBATION_TABLES.items():
    _experiment = PERTURBATION_EXPERIMENTS[_experiment]

    rule:
        name:
            _table
        input:
            [
                f"{model_dir('perturbation', m)}/{_experiment['stem']}{suffix}.parquet".format(
                    **{_experiment["wildcard"]: variant}
                )
                for m in PERTURBATION_MODELS
                for variant in _experiment["variants"]
                for suffix in ("", "_predictions")
            ],
            UNPERTURBED_LAST_BLOCKS,
            [token_labels_table(m) for m in PERTURBATION_MODELS] if "token_labels" in _experiment["inputs"] else [],
        output:
            **figure_outputs(_table, "Perturbation"),
        params:
            models=descriptions(PERTURBATION_MODELS),
        group: FIGURE_GROUP
        conda:
            "../envs/plotting.yaml"
        log:
            f"results/logs/tables/{_table}.log",
        script:
            "../workflow_scripts/perturbation_table.py"
