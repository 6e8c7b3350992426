from pathlib import Path

from class_embedding import logs, tables
from class_embedding.data import cifar, image_folder, imagenet_s

with logs.logged(snakemake):
    images_dir = Path(snakemake.input.images)
    n = snakemake.params.images_per_class
    if snakemake.params.kind == "cifar100":
        stimuli = cifar.select_stimuli(images_dir, n)
    elif snakemake.params.kind == "image_folder":
        folder = snakemake.params.image_folder
        stimuli = image_folder.select_stimuli(
            images_dir,
            folder["labels"],
            n,
            snakemake.params.num_classes,
            folder["class_names"],
            folder["imagenet_subset"],
            snakemake.params.min_class_share,
        )
    elif "csv" in snakemake.input.keys():
        stimuli = imagenet_s.stimuli_from_csv(
            snakemake.input.csv, images_dir / "validation", images_dir / "LOC_synset_mapping.txt", n
        )
    else:
        stimuli = imagenet_s.select_stimuli(
            images_dir / "validation",
            images_dir / "LOC_synset_mapping.txt",
            n,
            snakemake.params.exclude_wnids,
        )
    tables.write_table(stimuli, snakemake.output[0], {"images_per_class": n})
