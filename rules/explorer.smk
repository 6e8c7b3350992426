# Tokens over their images: fig_token_maps_<model> (a few images × a few blocks, coloured by the
# class identifiability of the true class) and the offline explorer pages under results/explorer/
# (every token of every block of a set of images, one self-contained HTML page per model).


rule fig_token_maps:
    input:
        unpack(model_token_map_inputs),
        tables=by_model(layer_table_list, kinds=("hs",)),
    output:
        **figure_outputs("fig_token_maps", "Token maps", per_model=True),
    log:
        "results/logs/figures/fig_token_maps_{model}.log",
    wildcard_constraints:
        model=alternatives(TRAINED_MODELS),
    group:
        FIGURE_GROUP
    conda:
        "../envs/explain.yaml"
    params:
        model=model_description,
        preprocessing=model_preprocessing,
        settings=config["token_maps"],
    script:
        "../workflow_scripts/token_map_figure.py"


rule explorer_page:
    input:
        unpack(model_token_map_inputs),
        tables=by_model(layer_table_list),
    output:
        report(
            layout.explorer_page("{model}"),
            caption="../report/explorer.rst",
            category="Token explorer",
            subcategory="{model}",
        ),
    log:
        "results/logs/explorer/{model}.log",
    wildcard_constraints:
        model=alternatives(EXPLORER_MODELS),
    group:
        FIGURE_GROUP
    conda:
        "../envs/explain.yaml"
    params:
        model=model_description,
        preprocessing=model_preprocessing,
        # Without explorer.models: choosing other models leaves the existing pages alone.
        settings={key: value for key, value in config["explorer"].items() if key != "models"},
    script:
        "../workflow_scripts/explorer_page.py"


rule explorer_index:
    input:
        [layout.explorer_page(model) for model in EXPLORER_MODELS],
    output:
        layout.explorer_index(),
    log:
        "results/logs/explorer/index.log",
    group:
        FIGURE_GROUP
    conda:
        "../envs/explain.yaml"
    params:
        models=descriptions(EXPLORER_MODELS),
    script:
        "../workflow_scripts/explorer_page.py"
