from pathlib import Path

from class_embedding import imagenet_s, logs, tables

with logs.logged(snakemake):
    images_dir = Path(snakemake.input.images)
    stimuli = imagenet_s.select_stimuli(
        images_dir / "validation",
        images_dir / "LOC_synset_mapping.txt",
        snakemake.params.images_per_class,
        snakemake.params.exclude_wnids,
    )
    tables.write_table(stimuli, snakemake.output[0], {"images_per_class": snakemake.params.images_per_class})
