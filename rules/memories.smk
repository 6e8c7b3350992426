# Key–value memories (METHOD §4.11, notebook 2 of §5). One torch job per trained model projects
# every value vector onto the class embeddings (and builds the random baseline model); the
# figure rules combine that cache with the activated memories stored by the extraction.
# Captions (report/<name>.rst) say which paper figure each target reproduces.


rule value_projections:
    input:
        checkpoint="results/checkpoints/{model}.pt",
    output:
        classes="results/memories/{model}/class_memories.parquet",
        memories="results/memories/{model}/memory_classes.parquet",
    wildcard_constraints:
        model=alternatives(TRAINED_MODELS),
    params:
        spec=lambda wildcards: MODELS[wildcards.model],
        seed=config["seed"],
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,
    conda:
        "../envs/extraction.yaml"
    log:
        "results/logs/value_projections/{model}.log",
    script:
        "../workflow_scripts/value_projections.py"


# target name -> (inputs, models, options passed to its function)
MEMORY_TARGETS = {
    "fig_class_value_agreement": (["classes"], TRAINED_MODELS, {}),
    "fig_key_value_agreement_rate": (["classes", "memories", "extraction"], TRAINED_MODELS, {}),
    "fig_agreement_accuracy_diff": (["classes", "memories", "extraction"], TRAINED_MODELS, {}),
    "fig_memory_compositionality": (["memories", "extraction"], TRAINED_MODELS, {}),
    "fig_memory_compare": (["classes", "memories", "extraction"], TRAINED_MODELS, {}),
    "tab_value_vector_classes": (
        ["memories", "stimuli"],
        value_vector_models(),
        config["memories"]["value_vectors"],  # block_index, layer_type, neurons
    ),
}


for target, (needs, names, options) in MEMORY_TARGETS.items():

    rule:
        name:
            target
        input:
            memory_inputs(needs, names),
        output:
            **figure_outputs(target, category="Key-value memories"),
        params:
            models=[{**describe_model(name), "memories": f"results/memories/{name}"} for name in names],
            seed=config["seed"],
            n_permutations=config["statistics"]["permutations"],
            n_bootstrap=config["statistics"]["bootstrap"],
            options=options,
        conda:
            "../envs/plotting.yaml"
        log:
            f"results/logs/memories/{target}.log",
        script:
            "../workflow_scripts/memory_figure.py"
