from class_embedding import logs
from class_embedding.explorer import pages

with logs.logged(snakemake):
    if snakemake.rule == "explorer_index":
        pages.explorer_index(snakemake.params.models, list(snakemake.input), snakemake.output[0])
    else:
        pages.explorer_page(
            model=snakemake.params.model,
            preprocessing=snakemake.params.preprocessing,
            stimuli_table=snakemake.input.stimuli,
            images_dir=snakemake.input.images,
            labels_table=snakemake.input.get("token_labels"),
            settings=snakemake.params.settings,
            output=snakemake.output[0],
        )
