# Explanations from the class embedding space (notebook 3, docs/method.md §4.12, §4.13) for the trained
# [CLS] models of explainability.models: one GPU job per model computes every stimulus's summed
# gradient map and Chefer relevance for its true class (results/explain/model=<m>/maps.parquet);
# one GPU job per perturbation model keeps the most or least important image tokens of every
# ordering (gradients, Chefer, linear probes, torch's seeded random permutations) and measures accuracy
# (perturbation_curves.parquet, per-image perturbation_correct.parquet). The heat-map figures
# compute their few panels from the checkpoint; the curves and the AUC table read the tables.


rule explain_maps:
    input:
        unpack(by_model(stimulus_run_inputs)),
    output:
        layout.explain_tables("{model}")["maps"],
    log:
        "results/logs/explain_maps/{model}.log",
    benchmark:
        "results/benchmarks/explain_maps/{model}.tsv"
    wildcard_constraints:
        model=alternatives(EXPLAIN_MODELS),
    conda:
        "../envs/extraction.yaml"
    threads: 4
    resources:
        **gpu_job(mem_mb=8000, runtime=60),
    params:
        **stimulus_run_params("explainability"),
    script:
        "../workflow_scripts/explain_maps.py"


rule explain_perturbation:
    input:
        unpack(by_model(stimulus_run_inputs)),
        maps=rules.explain_maps.output[0],
        # The linear_probe ordering, for models with probes (rules/probing.smk).
        probe_ranks=model_probe_ranks,
    output:
        curves=layout.explain_tables("{model}")["curves"],
        correct=layout.explain_tables("{model}")["correct"],
    log:
        "results/logs/explain_perturbation/{model}.log",
    benchmark:
        "results/benchmarks/explain_perturbation/{model}.tsv"
    wildcard_constraints:
        model=alternatives(EXPLAIN_PERTURBATION_MODELS),
    conda:
        "../envs/extraction.yaml"
    threads: 4
    resources:
        # Every preprocessed stimulus is held in memory (2.7 GB for 4550 images at 224²).
        **gpu_job(mem_mb=16000, runtime=120),
    params:
        **stimulus_run_params("explainability"),
    script:
        "../workflow_scripts/explain_curves.py"


# Heat maps: a forward and a backward per panel image on the CPU (or GPU when visible). Not in
# the figure group: they load a checkpoint and run the model.
for _name in EXPLAIN_HEATMAP_FIGURES:

    rule:
        name:
            _name
        input:
            **stimulus_run_inputs(EXPLAIN_FIGURE_MODEL) if EXPLAIN_FIGURE_MODEL else {},
        output:
            **figure_outputs(_name, "Explainability"),
        log:
            f"results/logs/figures/{_name}.log",
        conda:
            "../envs/explain.yaml"
        threads: 2
        params:
            model=describe_model(EXPLAIN_FIGURE_MODEL) if EXPLAIN_FIGURE_MODEL else None,
            spec=compute_spec(MODELS[EXPLAIN_FIGURE_MODEL]) if EXPLAIN_FIGURE_MODEL else None,
            explainability=result_settings(config, "explainability"),
        script:
            "../workflow_scripts/explain_figure.py"


rule fig_explain_sum:
    input:
        unpack(by_model(stimulus_run_inputs)),
    output:
        **figure_outputs("fig_explain_sum", "Explainability", per_model=True),
    log:
        "results/logs/figures/fig_explain_sum_{model}.log",
    wildcard_constraints:
        model=alternatives(EXPLAIN_MODELS),
    conda:
        "../envs/explain.yaml"
    threads: 2
    params:
        model=model_description,
        spec=model_spec,
        explainability=result_settings(config, "explainability"),
    script:
        "../workflow_scripts/explain_figure.py"


for _name in EXPLAIN_CURVE_TARGETS:

    rule:
        name:
            _name
        input:
            [model[table] for model in descriptions(EXPLAIN_PERTURBATION_MODELS) for table in ("curves", "correct")],
        output:
            **figure_outputs(_name, "Explainability"),
        log:
            f"results/logs/figures/{_name}.log",
        group:
            FIGURE_GROUP
        conda:
            "../envs/plotting.yaml"
        params:
            models=descriptions(EXPLAIN_PERTURBATION_MODELS),
            seed=config["seed"],
            bootstrap=config["explainability"]["bootstrap"],
        script:
            "../workflow_scripts/explain_curve_figure.py"
