"""The optimisation stages from a pipeline YAML: export -> quantize -> bench, each feeding the next."""

import json

from conftest import build_tiny_artifact


def test_pipeline_export_quantize_bench(tmp_path):
    from deploylm.artifacts import Artifact
    from deploylm.pipeline import run_pipeline

    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "dev"):
        (data / f"{split}.tsv").write_text("sentence\tlabel\n" + "".join(f"fine film {i}\t{i % 2}\n" for i in range(24)))
    src = build_tiny_artifact(tmp_path / "cls", labels=["0", "1"])
    spec = {"workdir": str(tmp_path / "run"), "input": str(src.path), "steps": [
        {"export": {"optimize": "O2", "data": str(data), "allow_slower": True}},
        {"quantize": {"method": "dynamic-int8", "data": str(data), "allow_slower": True}},
        {"bench": {"data": str(data), "batch_sizes": [4], "seq_len": ["real"]}},
    ]}
    path = tmp_path / "pipe.json"
    path.write_text(json.dumps(spec))
    made = run_pipeline(path)
    assert [a.stage for a in made] == ["export", "quantize"]
    quant = Artifact.open(made[1].path)
    assert quant.manifest["parent"]["path"] == str(made[0].path.resolve())
    assert quant.manifest["bench"]["data"]["results"][0]["batch_size"] == 4
    assert Artifact.open(src.path).manifest["bench"]["data"]["backend"] == "torch"
    assert (tmp_path / "run" / "bench-02-quantize.png").is_file()
