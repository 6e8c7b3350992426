"""benchmarks/gpu.sh --quick runs on the CPU and writes the JSON record the README's GPU table is built from."""

import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_benchmark_quick_writes_every_measurement(tmp_path):
    output = tmp_path / "gpu.json"
    subprocess.run(
        [str(ROOT / "benchmarks" / "gpu.sh"), "--quick", "--threads", "2", "--output", str(output)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    record = json.loads(output.read_text())
    assert record["quick"] and record["device"] == "cpu"
    rows = record["extraction_preloaded"]
    # Two shapes × two batch sizes × float32 / TF32.
    assert {(r["shape"], r["batch"], r["precision"]) for r in rows} == {
        (shape, batch, precision)
        for shape in ("vit_b16", "vit_b32")
        for batch in (4, 8)
        for precision in ("float32", "tf32")
    }
    for row in rows:
        for key in ("bare_images_per_s", "lens_incremental_images_per_s", "lens_direct_images_per_s"):
            assert row[key] > 0, (row, key)
        assert row["lens_incremental_over_bare"] == row["bare_images_per_s"] / row["lens_incremental_images_per_s"]
    jpeg = record["extraction_from_jpeg"]
    assert jpeg["images"] == 10 and jpeg["workers"] == 2
    assert jpeg["extract_shard_images_per_s"] > 0 and jpeg["dataloader_only_images_per_s"] > 0
    explain = record["explain_perturbation_curves"]
    # One importance ordering in both directions plus two random permutations; every 5th n plus N − 1 and N.
    assert explain["curves"] == 4 and explain["forwards_per_image"] == explain["curves"] * explain["kept_counts"]
    assert explain["seconds_per_image"] == explain["seconds"] / explain["images"]
    probes = record["streaming_probes"]
    # 2 blocks × 3 kinds × (4 patches + [CLS]) tokens.
    assert probes["probes"] == 30 and probes["seconds_per_image"] > 0
