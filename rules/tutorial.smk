# The tutorial notebook's two figures (docs/method.md §5) for tutorial.model: the class logits of one
# block's [CLS] projection and the summed-gradient heat map, each of one sample image. A forward
# (and a backward) of one image on the CPU; they wait for the model's weight check when it has one.

TUTORIAL = config["tutorial"]

if TUTORIAL_MODEL is not None:
    # The paper's axis label names ImageNet; other datasets (the demo, CIFAR-100) get a neutral one.
    TUTORIAL_X_LABEL = (
        "ImageNet Class Index"
        if dataset_kind(model_dataset(TUTORIAL_MODEL)) in ("imagenet_s", "root")
        else "Class index"
    )
    TUTORIAL_BLOCK = TUTORIAL["cls_logits"]["block"]
    if TUTORIAL_BLOCK is None:
        TUTORIAL_BLOCK = MODELS[TUTORIAL_MODEL]["num_blocks"] - 2

    for _name, _part in TUTORIAL_FIGURES.items():

        rule:
            name:
                _name
            input:
                **sample_image_inputs(TUTORIAL[_part]["image"]),
                checkpoint=layout.checkpoint(TUTORIAL_MODEL),
                weight_check=weight_check_file(TUTORIAL_MODEL),
            output:
                **figure_outputs(_name, "Tutorial"),
            log:
                f"results/logs/figures/{_name}.log",
            conda:
                "../envs/explain.yaml"
            threads: 2
            params:
                model=TUTORIAL_MODEL,
                spec=compute_spec(MODELS[TUTORIAL_MODEL]),
                figure={**TUTORIAL[_part], "block": TUTORIAL_BLOCK},
                sample=SAMPLE_IMAGES[TUTORIAL[_part]["image"]],
                x_label=TUTORIAL_X_LABEL,
                loss=config["explainability"]["loss"],
                swap_red_blue=config["explainability"]["figures"]["swap_red_blue"],
            script:
                "../workflow_scripts/tutorial_figure.py"
