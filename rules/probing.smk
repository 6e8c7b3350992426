# Linear probes (notebook 4, docs/method.md §4.14): ridge probes for every layer kind, block and token,
# trained on the probe split (the dataset's test split, probing.images_per_class per class) and
# scored on the stimuli. One GPU job per model fits all probes in one streaming pass over the
# probe images and scores them in one pass over the stimuli (chunked by blocks when the
# statistics exceed probing.memory_gb); then per-model figures beside the class projection and
# the perturbation test of EXPLAIN (results/explain/model=<m>/perturbation_curves.parquet).


rule probe_stimuli:
    input:
        unpack(dataset_inputs),
    output:
        layout.probe_stimuli_table("{dataset}"),
    log:
        "results/logs/probe_stimuli/{dataset}.log",
    conda:
        "../envs/extraction.yaml"
    params:
        probing={key: config["probing"][key] for key in ("images_per_class", "short_classes")},
        exclude_wnids=config["stimuli"]["exclude_wnids"],
    script:
        "../workflow_scripts/probe_stimuli.py"


rule linear_probes:
    input:
        unpack(by_model(stimulus_run_inputs)),
        probe_stimuli=model_probe_stimuli,
    output:
        **layout.probe_tables("{model}"),
    log:
        "results/logs/linear_probes/{model}.log",
    benchmark:
        "results/benchmarks/linear_probes/{model}.tsv"
    wildcard_constraints:
        model=alternatives(PROBE_MODELS),
    conda:
        "../envs/extraction.yaml"
    threads: 4
    resources:
        # Host memory holds the statistics too when the job runs on the CPU.
        **gpu_job(mem_mb=8000 + int(1000 * config["probing"]["memory_gb"]), runtime=60),
    params:
        **stimulus_run_params("probing"),
    script:
        "../workflow_scripts/probe_fit.py"


# probe figure -> (its models, its inputs, params besides the model's description)
PROBE_FIGURES = {
    "fig_probe_vs_projection_acc": (
        PROBE_MODELS,
        {"probe_accuracy": rules.linear_probes.output.accuracy, "layers": by_model(layer_table_list)},
        {"seed": config["seed"], "n_bootstrap": config["statistics"]["bootstrap"]},
    ),
    "fig_probe_perturbation": (
        PROBE_PERTURBATION_MODELS,
        {"curves": rules.explain_perturbation.output.curves, "predictions": by_model(layout.predictions_table)},
        {},
    ),
    "fig_linear_probing_all": (
        PROBE_PERTURBATION_MODELS,
        {
            "probe_accuracy": rules.linear_probes.output.accuracy,
            "layers": by_model(layer_table_list),
            "curves": rules.explain_perturbation.output.curves,
            "predictions": by_model(layout.predictions_table),
        },
        {"seed": config["seed"], "n_bootstrap": config["statistics"]["bootstrap"]},
    ),
}


for _name, (_models, _inputs, _params) in PROBE_FIGURES.items():

    rule:
        name:
            _name
        input:
            **_inputs,
        output:
            **figure_outputs(_name, "Linear probes", per_model=True),
        log:
            f"results/logs/figures/{_name}_{{model}}.log",
        wildcard_constraints:
            model=alternatives(_models),
        group:
            FIGURE_GROUP
        conda:
            "../envs/plotting.yaml"
        params:
            **_params,
            model=model_description,
        script:
            "../workflow_scripts/probe_figure.py"
