"""No code runs from a downloaded or given file: checkpoints are loaded with weights_only=True
only, unpinned downloads are checked against the sha256 recorded at their first download, and the
CIFAR-100 archive (pickles) is read only after its pinned checksum matched.

The payloads below are pickles whose loading would create a marker file; every test checks that
the marker is never created, and one test shows that the payload does create it when unpickled in
full, so a passing test means the loader refused it, not that the payload was harmless."""

import hashlib
import io
import pickle
import subprocess
import tarfile
from pathlib import Path

import pytest
import torch
import yaml
from workflow_runs import snakemake, write_config

from class_embedding.data import cifar, downloads
from class_embedding.errors import InputError
from class_embedding.models import building, checkpoints

REPO = Path(__file__).resolve().parents[1]
OPEN = f"{open.__module__}.{open.__qualname__}"  # how the payload's callable is named in the pickle
TINY = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2, "num_classes": 7}


class CreatesMarker:
    """Unpickling this calls open(marker, "w"): the file appears only if the pickle ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def tiny_spec(arch="deit_base_patch16_224"):
    return {
        "display_name": arch,
        "dataset": "micro",
        "arch": arch,
        "kwargs": dict(TINY),
        "num_blocks": 2,
        "token_grid": 4,
        "class_token": True,
        "num_classes": 7,
        "final_norm": "norm",
        "preprocessing": {"resize": [32, 32], "mean": [0.5] * 3, "std": [0.5] * 3},
        "random_twin": False,
        "weights": {"source": "demo_training"},
    }


def malicious_checkpoint(path: Path, marker: Path) -> Path:
    """A release-like checkpoint: real weights under state_dict, plus the payload beside them."""
    weights = building.random_model(tiny_spec(), "evil", seed=0).state_dict()
    torch.save({"epoch": 1, "state_dict": weights, "args": CreatesMarker(marker)}, path)
    return path


def test_the_payload_runs_when_unpickled_in_full(tmp_path):
    marker = tmp_path / "marker"
    path = malicious_checkpoint(tmp_path / "evil.pth", marker)
    torch.load(path, weights_only=False)
    assert marker.exists(), "the payload must be live, or the refusal tests prove nothing"


@pytest.mark.parametrize("legacy_format", [False, True])
def test_reading_a_checkpoint_that_runs_code_is_refused(tmp_path, legacy_format):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pth"
    torch.save(
        {"state_dict": {}, "args": CreatesMarker(marker)}, path, _use_new_zipfile_serialization=not legacy_format
    )
    with pytest.raises(InputError) as refused:
        checkpoints.read_state_dict(path, "deit", state_dict_key="state_dict")
    message = str(refused.value)
    assert str(path) in message and "model 'deit'" in message
    assert OPEN in message, "the message names the type the file asks for"
    assert "weights_only=False" in message and "plain_state_dict.pt" in message, "and says how to convert it"
    with pytest.raises(InputError, match=OPEN):
        checkpoints.load_checkpoint(building.build_model(tiny_spec(), "deit"), path, "deit")
    assert not marker.exists()


def test_timm_loading_of_a_file_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "pytorch_model.bin"
    torch.save({"payload": CreatesMarker(marker)}, path)
    spec = {**tiny_spec("vit_base_patch16_224"), "kwargs": {**TINY, "num_classes": 1000}, "num_classes": 1000}
    with pytest.raises(InputError, match=f"{path}.*{OPEN}"):
        building.timm_pretrained(
            spec, "vit", "vit_base_patch16_224.augreg_in21k_ft_in1k", tmp_path / "cache", file=path
        )
    assert not marker.exists()


def run_workflow(config: dict, work: Path, *targets: str, timeout: int = 900) -> subprocess.CompletedProcess:
    config_file = write_config(config, work / "config.yaml")
    return snakemake("--cores", "2", "--keep-going", *targets, configfiles=[config_file], workdir=work, timeout=timeout)


def micro_config(models_section: dict) -> dict:
    config = yaml.safe_load((REPO / "tests" / "configs" / "micro.yaml").read_text())
    config["models"] = models_section
    config.pop("probing", None)
    return config


@pytest.mark.workflow
def test_every_checkpoint_rule_refuses_a_file_that_runs_code(tmp_path):
    marker = tmp_path / "marker"
    (tmp_path / "release").mkdir()
    release = malicious_checkpoint(tmp_path / "release" / "deit_base_trm.pth", marker)
    given = malicious_checkpoint(tmp_path / "given.pt", marker)
    config = micro_config(
        {
            # A release fetched by URL (no checksum: the first download is unverified) ...
            "from_url": {
                **tiny_spec(),
                "weights": {"source": "url", "url": release.as_uri(), "checksum": None, "state_dict_key": "state_dict"},
            },
            # ... and a checkpoint the user gives by path.
            "from_file": {
                **tiny_spec(),
                "weights": {"source": "file", "path": str(given), "state_dict_key": "state_dict"},
            },
        }
    )
    result = run_workflow(
        config, tmp_path / "work", "results/checkpoints/from_url.pt", "results/checkpoints/from_file.pt"
    )
    assert result.returncode != 0
    logs = tmp_path / "work" / "results" / "logs" / "convert_checkpoint"
    for name, source in (("from_url", "resources/weights/release/from_url.pth"), ("from_file", str(given))):
        log = (logs / f"{name}.log").read_text()
        assert f"checkpoint {source} of model '{name}' holds {OPEN}" in log, log[-2000:]
        assert not (tmp_path / "work" / "results" / "checkpoints" / f"{name}.pt").exists()
    download_log = (tmp_path / "work" / "results" / "logs" / "download_checkpoint" / "from_url.log").read_text()
    assert "UNVERIFIED download" in download_log and "checksum: sha256:" in download_log
    assert not marker.exists()


def test_a_release_replaced_after_its_first_download_is_refused(tmp_path):
    release = tmp_path / "deit_base_trm.pth"
    release.write_bytes(b"first release")
    dest = tmp_path / "cache" / "deit.pth"
    first = downloads.download(release.as_uri(), dest)
    assert (tmp_path / "cache" / "deit.pth.sha256").read_text().strip() == f"sha256:{first}"
    downloads.verify_download(dest, None, "checkpoint")
    # The file in the cache is swapped: its use is refused.
    dest.write_bytes(b"tampered")
    with pytest.raises(InputError, match=r"checkpoint .*deit\.pth: sha256 is .*expected " + first):
        downloads.verify_download(dest, None, "checkpoint")
    # The release is swapped upstream: a new download is refused and nothing is kept.
    dest.unlink()
    release.write_bytes(b"replaced release")
    with pytest.raises(InputError, match="recorded at its first download .*delete .*deit.pth.sha256"):
        downloads.download(release.as_uri(), dest)
    assert not dest.exists()


def test_a_configured_checksum_wins_over_the_recorded_one(tmp_path):
    path = tmp_path / "file.bin"
    path.write_bytes(b"abc")
    (tmp_path / "file.bin.sha256").write_text("sha256:" + "0" * 64 + "\n")
    downloads.verify_download(path, "md5:" + hashlib.md5(b"abc").hexdigest(), "file")
    with pytest.raises(InputError, match="0{64}"):
        downloads.verify_download(path, None, "file")


def malicious_cifar_archive(path: Path, marker: Path) -> Path:
    """cifar-100-python.tar.gz whose "test" batch runs code when unpickled."""
    with tarfile.open(path, "w:gz") as archive:
        for name, payload in (("test", CreatesMarker(marker)), ("meta", {"fine_label_names": ["a"]})):
            data = pickle.dumps(payload)
            member = tarfile.TarInfo(f"cifar-100-python/{name}")
            member.size = len(data)
            archive.addfile(member, io.BytesIO(data))
    return path


@pytest.mark.workflow
def test_cifar_archive_with_a_wrong_checksum_is_never_unpickled(tmp_path):
    marker = tmp_path / "marker"
    archive = malicious_cifar_archive(tmp_path / "cifar-100-python.tar.gz", marker)
    official = "md5:eb9058c3a382ffc7106e4002c42a8d85"
    # Through the workflow: the download rule refuses it and keeps nothing.
    config = yaml.safe_load((REPO / "tests" / "configs" / "micro.yaml").read_text())
    config["datasets"]["cifar"] = {
        "cifar100": {"root": None, "download": {"url": archive.as_uri(), "checksum": official}}
    }
    result = run_workflow(config, tmp_path / "work", "results/data/cifar/stimuli.parquet")
    assert result.returncode != 0
    log = (tmp_path / "work" / "results" / "logs" / "download" / "cifar_cifar100.log").read_text()
    assert "md5 is" in log and "expected eb9058c3a382ffc7106e4002c42a8d85" in log
    assert not (tmp_path / "work" / "resources" / "downloads" / "cifar" / "cifar100").exists()
    # The same archive put in the download's place by hand: the preparation checks it again.
    with pytest.raises(InputError, match="CIFAR-100 archive .*md5 is"):
        cifar.prepare_cifar100(archive, tmp_path / "out" / "ImageNetS919", tmp_path / "out" / "pickles", official)
    assert not marker.exists()
    # A download without a pinned checksum is refused before any job runs.
    config["datasets"]["cifar"]["cifar100"]["download"]["checksum"] = None
    result = run_workflow(config, tmp_path / "work2", "-n", "results/data/cifar/stimuli.parquet")
    assert result.returncode != 0 and "cifar100.download.checksum is null" in result.stdout + result.stderr
    assert not marker.exists()
