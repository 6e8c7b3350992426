from class_embedding import logs, network
from class_embedding.data import downloads
from class_embedding.errors import InputError


def offline_help(smk) -> str:
    """How to run without the download: the file put in place by hand, or the config key that
    gives it (per rule)."""
    wildcards, dest = smk.wildcards, smk.output[0]
    alternatives = {
        "download_checkpoint": f"models.{wildcards.get('model')}.weights: {{source: file, path: /path/to/the/file}} "
        f"(keep its state_dict_key and strip_prefix)",
        "download_sample_image": f"sample_images.{wildcards.get('sample')}: {{path: /path/to/the/image, class_index: ...}}",
    }
    if smk.rule == "download" and wildcards.get("item") == "cifar100":
        alternatives["download"] = (
            f"datasets.{wildcards.get('dataset')}.cifar100.root: a folder holding cifar-100-python/ (torchvision's "
            f"CIFAR100 root)"
        )
    checksum = smk.params.source.get("checksum")
    lines = [
        "Without network, either",
        f"  1. download it on a machine with network and put it at {dest}"
        + (f" (its checksum must be {checksum}, as the config pins it)" if checksum else ""),
    ]
    if smk.rule in alternatives:
        lines.append(f"  2. or give the file in the config: {alternatives[smk.rule]}")
    return "\n".join(lines)


with logs.logged(snakemake):
    source = snakemake.params.source
    try:
        downloads.download(source["url"], snakemake.output[0], source.get("checksum"))
    except network.Unreachable as err:
        raise InputError(f"{err}\n{offline_help(snakemake)}") from None
