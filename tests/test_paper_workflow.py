"""The paper's data and checkpoint rules run for real on fake inputs: ImageNet-S annotations and a
DeiT-style release served on 127.0.0.1, a fake ImageNet-val archive, fake CIFAR-100 pickles and
checkpoints in the CIFAR format, for tiny models."""

import hashlib
import tarfile
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from test_paper_data import make_sources, write_cifar
from workflow_runs import snakemake, write_config

from class_embedding import tables
from class_embedding.models import building

TINY = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}
SQUASH = {"resize": [32, 32], "mean": [0.5] * 3, "std": [0.5] * 3}

pytestmark = pytest.mark.workflow


def model_entry(arch, dataset, weights, num_classes, random_twin=False):
    return {
        "display_name": arch,
        "dataset": dataset,
        "arch": arch,
        "kwargs": {**TINY, "num_classes": num_classes},
        "num_blocks": 2,
        "token_grid": 4,
        "class_token": True,
        "num_classes": num_classes,
        "final_norm": "norm",
        "weights": weights,
        "preprocessing": SQUASH,
        "random_twin": random_twin,
    }


def md5(path: Path) -> str:
    return "md5:" + hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def paper_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper")
    sources = make_sources(root / "sources")
    served = sources["served"]
    # A DeiT-style release (weights under "model" plus intermediate heads) and a CIFAR checkpoint.
    deit_spec = model_entry("deit_base_patch16_224", "imagenet", {}, 6)
    deit = building.random_model(deit_spec, "deit", seed=5)
    torch.save(
        {"model": {**deit.state_dict(), "head_0.weight": torch.zeros(6, 32)}, "epoch": 1}, served / "deit_base_trm.pth"
    )
    cifar_spec = model_entry("vit_base_patch16_224", "cifar", {}, 6)
    cifar_model = building.random_model(cifar_spec, "cifar", seed=6)
    torch.save({f"model.{k}": v for k, v in cifar_model.state_dict().items()}, root / "cifar.pt")
    write_cifar(root / "cifar_root")
    with tarfile.open(served / "cifar-100-python.tar.gz", "w:gz") as archive:
        archive.add(root / "cifar_root" / "cifar-100-python", arcname="cifar-100-python")

    handler = partial(SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"

    def download(name):
        return {"url": f"{base}/{name}", "checksum": md5(served / name)}

    config = {
        "seed": 1,
        "datasets": {
            "imagenet": {
                "imagenet_s": {
                    "imagenet_val": str(sources["tar"]),
                    "imagenet_val_checksum": md5(sources["tar"]),
                    "synset_mapping": str(sources["mapping"]),
                    "downloads": {
                        "segmentation": download("ImageNetS919.zip"),
                        "validation_names": download("ImageNetS_im919_validation.txt"),
                        "validation_mapping": download("ImageNetS_im919_mapping_validation.txt"),
                        "test_mapping": download("ImageNetS_im919_mapping_test.txt"),
                        "categories": {"url": f"{base}/ImageNetS_categories_im919.txt", "checksum": None},
                    },
                }
            },
            "cifar": {"cifar100": {"root": None, "download": download("cifar-100-python.tar.gz")}},
        },
        "stimuli": {"images_per_class": 2},
        "models": {
            "deit": {
                **deit_spec,
                "weights": {
                    "source": "url",
                    "url": f"{base}/deit_base_trm.pth",
                    "checksum": md5(served / "deit_base_trm.pth"),
                    "state_dict_key": "model",
                },
                "random_twin": True,
            },
            "cifar_vit": {
                **cifar_spec,
                "weights": {"source": "file", "path": str(root / "cifar.pt"), "strip_prefix": "model."},
            },
        },
        "paper_reference": {"deit": {"accuracy": 84.97, "pct_tokens": 79.641502, "pct_images": 96.263733}},
    }
    config_file = write_config(config, root / "config.yaml")
    work = root / "work"
    # Everything up to extraction (which the demo's tests cover): downloads, preparation,
    # stimuli, token labels, checkpoint conversion.
    targets = [
        "results/data/imagenet/token_labels_g4.parquet",
        "results/data/cifar/stimuli.parquet",
        "results/checkpoints/deit.pt",
        "results/checkpoints/cifar_vit.pt",
    ]
    result = snakemake("--cores", "2", *targets, configfiles=[config_file], workdir=work, timeout=600)
    server.shutdown()
    server.server_close()
    return work, result, {"deit": deit, "cifar_vit": cifar_model}


def test_paper_rules_run_end_to_end(paper_run):
    work, result, _ = paper_run
    assert result.returncode == 0, result.stderr[-4000:]
    results = work / "results"
    assert (work / "resources" / "downloads" / "imagenet" / "categories.sha256").read_text().startswith("sha256:")
    stimuli = tables.read_table(results / "data" / "imagenet" / "stimuli.parquet").to_pydict()
    assert stimuli["wnid"] == ["n00000001"] * 2 + ["n00000002"] * 2 + ["n00000003"] * 2
    cifar_stimuli = tables.read_table(results / "data" / "cifar" / "stimuli.parquet").to_pydict()
    assert cifar_stimuli["wnid"] == ["2", "2", "0", "0", "1", "1"]
    assert not (results / "data" / "cifar" / "token_labels_g4.parquet").exists()


def test_converted_checkpoints_are_the_sources_weights(paper_run):
    work, result, sources = paper_run
    assert result.returncode == 0, result.stderr[-4000:]
    for name, source in sources.items():
        state = torch.load(work / "results" / "checkpoints" / f"{name}.pt", weights_only=True)
        assert set(state) == set(source.state_dict())
        assert all(torch.equal(state[k], v) for k, v in source.state_dict().items()), name
