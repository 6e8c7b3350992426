from class_embedding import logs
from class_embedding.figures import token_map_figures

with logs.logged(snakemake):
    token_map_figures.fig_token_maps(
        model=snakemake.params.model,
        preprocessing=snakemake.params.preprocessing,
        stimuli_table=snakemake.input.stimuli,
        images_dir=snakemake.input.images,
        categories=snakemake.input.get("categories"),
        labels_table=snakemake.input.get("token_labels"),
        masks_dir=snakemake.input.get("masks"),
        settings=snakemake.params.settings,
        output=snakemake.output,
    )
