"""``vgrout plan``: a manifest's run checked before anything starts.

The real manifests in deploy/ pass; variants of them that cannot fit (GPU memory, node shapes),
lose their outputs (relative or pod-local paths), expose Docker on TCP, lack token auth or would
exit 2 on an autoscaling cluster fail, naming the flag or field that fixes it.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from vgrout_ray.cluster import memory_plan as mp
from vgrout_ray.config import ConfigError, parse_config
from vgrout_ray.cluster.plan import ManifestError, driver_memory_check, main, read_manifest

REPO = Path(__file__).resolve().parents[1]
RAYJOB = yaml.safe_load((REPO / "deploy" / "rayjob.yaml").read_text())


def _manifests() -> list[Path]:
    out = []
    for p in sorted((REPO / "deploy").glob("*.yaml")):
        doc = yaml.safe_load(p.read_text())
        if isinstance(doc, dict) and (doc.get("kind") in ("RayJob", "RayCluster") or "available_node_types" in doc):
            out.append(p)
    return out


def _plan(tmp_path: Path, doc: dict, capsys, *extra: str) -> tuple[int, str]:
    p = tmp_path / "m.yaml"
    p.write_text(yaml.safe_dump(doc))
    rc = main([str(p), *extra])
    cap = capsys.readouterr()
    return rc, cap.out + cap.err


def _group(doc: dict, name: str) -> dict:
    return next(g for g in doc["spec"]["rayClusterSpec"]["workerGroupSpecs"] if g["groupName"] == name)


def _entry(doc: dict, old: str, new: str) -> None:
    assert old in doc["spec"]["entrypoint"]
    doc["spec"]["entrypoint"] = doc["spec"]["entrypoint"].replace(old, new)


@pytest.mark.parametrize("path", _manifests(), ids=lambda p: p.name)
def test_every_deploy_manifest_passes(path, capsys):
    rc = main([str(path)])
    out = capsys.readouterr().out
    print(out)
    assert rc == 0, out
    assert "PLAN OK" in out and "learner (GPU)" in out and "rollout (GPU)" in out and "it fits" in out
    assert "HF_HOME is not set" not in out


def test_deploy_has_both_kinds_of_manifest():
    assert {p.name for p in _manifests()} >= {"rayjob.yaml", "cluster.yaml"}


def test_a_learner_gpu_too_small_fails_naming_what_fits(tmp_path, capsys):
    doc = copy.deepcopy(RAYJOB)
    _group(doc, "learner-gpu")["template"]["spec"]["nodeSelector"] = {"nvidia.com/gpu.product": "NVIDIA-L4"}
    rc, out = _plan(tmp_path, doc, capsys)
    assert rc == 1, out
    assert "learner (GPU)" in out and "of 24.0 GiB: DOES NOT FIT" in out
    assert "memory: learner does not fit; would fit: a learner GPU with at least" in out
    assert "memory: rollout" not in out  # the rollout nodes' GPUs are unchanged


def test_long_completions_fail_and_the_fix_is_a_max_new_that_fits(tmp_path, capsys):
    doc = copy.deepcopy(RAYJOB)
    _entry(doc, "--intervention=route2", "--intervention=route2 --max-new=4096 --rollout.vllm-max-model-len=8192")
    rc, out = _plan(tmp_path, doc, capsys)
    assert rc == 1, out
    line = next(l for l in out.splitlines() if "memory: learner does not fit" in l)
    n = int(line.split("--max-new ")[1].split()[0])
    # the flag it names does fit
    rc2, out2 = _plan(tmp_path, _with_entry(doc, "--max-new=4096", f"--max-new={n}"), capsys)
    assert rc2 == 0, out2


def _with_entry(doc: dict, old: str, new: str) -> dict:
    d = copy.deepcopy(doc)
    _entry(d, old, new)
    return d


def test_vllm_share_too_small_names_the_utilisation_flag(tmp_path, capsys):
    doc = _with_entry(RAYJOB, "--rollout.gpus-per-actor=1", "--rollout.gpus-per-actor=1 "
                      "--rollout.vllm-gpu-memory-utilization=0.2")
    rc, out = _plan(tmp_path, doc, capsys)
    assert rc == 1 and "would fit: --rollout.vllm-gpu-memory-utilization 0." in out, out


def test_node_shapes_that_cannot_hold_the_graders_fail(tmp_path, capsys):
    doc = copy.deepcopy(RAYJOB)
    g = _group(doc, "grader-cpu")
    g["maxReplicas"] = g["minReplicas"] = g["replicas"] = 1
    rc, out = _plan(tmp_path, doc, capsys)
    assert rc == 1, out
    assert "cannot hold this run's actors" in out and "no room for: 30 grader actor(s)" in out
    assert "--grader.num-actors 30" in out


def test_a_gpu_role_with_no_gpu_group_fails(tmp_path, capsys):
    doc = copy.deepcopy(RAYJOB)
    spec = doc["spec"]["rayClusterSpec"]
    spec["workerGroupSpecs"] = [g for g in spec["workerGroupSpecs"] if g["groupName"] != "learner-gpu"]
    rc, out = _plan(tmp_path, doc, capsys)
    assert rc == 1 and "learner actors need" in out and "no node has enough" in out, out


def test_relative_and_pod_local_outputs_fail(tmp_path, capsys):
    rc, out = _plan(tmp_path, _with_entry(RAYJOB, "--out-dir=/results/out", "--out-dir=out"), capsys)
    assert rc == 1 and "--out-dir out: relative" in out, out
    doc = copy.deepcopy(RAYJOB)
    for g in [doc["spec"]["rayClusterSpec"]["headGroupSpec"], *doc["spec"]["rayClusterSpec"]["workerGroupSpecs"]]:
        for v in g["template"]["spec"].get("volumes", []):
            if v["name"] == "results":
                v.pop("persistentVolumeClaim")
                v["emptyDir"] = {}
    rc, out = _plan(tmp_path, doc, capsys)
    assert rc == 1 and "--out-dir /results/out: on group head it is on a emptyDir volume" in out, out
    assert "--svd-cache /results/svd_cache: on group learner-gpu" in out


def test_a_path_not_mounted_where_it_is_read_fails(tmp_path, capsys):
    doc = copy.deepcopy(RAYJOB)
    _group(doc, "rollout-gpu")["template"]["spec"]["containers"][0].pop("volumeMounts")
    rc, out = _plan(tmp_path, doc, capsys)
    assert rc == 1 and "--svd-cache /results/svd_cache: group rollout-gpu (rollout) mounts no volume there" in out


def test_docker_on_tcp_and_no_token_auth_fail(tmp_path, capsys):
    doc = copy.deepcopy(RAYJOB)
    _group(doc, "grader-cpu")["template"]["spec"]["containers"][0]["env"] = [
        {"name": "DOCKER_HOST", "value": "tcp://localhost:2375"}]
    del doc["spec"]["rayClusterSpec"]["authOptions"]
    rc, out = _plan(tmp_path, doc, capsys)
    assert rc == 1 and "security: group grader-cpu reaches Docker at tcp://localhost:2375" in out
    dind = _group(doc, "grader-cpu")["template"]["spec"]["containers"][1]
    dind["args"] = ["--host=tcp://0.0.0.0:2375"]
    rc, out = _plan(tmp_path, doc, capsys)
    assert "group grader-cpu, container dind: dockerd listens on TCP without TLS" in out
    assert "auth: the cluster does not use token auth" in out


def test_autoscaling_cluster_without_the_flag_fails(tmp_path, capsys):
    doc = copy.deepcopy(RAYJOB)
    _group(doc, "rollout-gpu")["minReplicas"] = 1  # starts with one rollout node, four needed
    assert _plan(tmp_path, doc, capsys)[0] == 0
    rc, out = _plan(tmp_path, _with_entry(doc, "--cluster.autoscales", ""), capsys)
    assert rc == 1 and "add --cluster.autoscales" in out, out
    doc["spec"]["rayClusterSpec"]["enableInTreeAutoscaling"] = False  # fixed size: replicas is all there is
    _group(doc, "rollout-gpu")["replicas"] = 1
    rc, out = _plan(tmp_path, _with_entry(doc, "--cluster.autoscales", ""), capsys)
    assert rc == 1 and "no room for: 3 rollout actor(s)" in out, out


def test_a_raycluster_with_a_local_model_config_fits(tmp_path, capsys):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({
        "hidden_size": 1024, "num_hidden_layers": 28, "intermediate_size": 3072, "vocab_size": 151936,
        "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128, "tie_word_embeddings": True}))
    doc = copy.deepcopy(RAYJOB)
    entry = doc["spec"].pop("entrypoint").replace("fast ", f"fast --model={model} ")
    cluster = {"apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": {"name": "x"},
               "spec": doc["spec"]["rayClusterSpec"]}
    p = tmp_path / "rc.yaml"
    p.write_text(f"# vgrout-entrypoint: {entry}\n" + yaml.safe_dump(cluster))
    rc = main([str(p)])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert f"model {model}: 0.60 B params, 28 layers" in out and "PLAN OK" in out


def test_unknown_model_and_broken_manifests_name_the_field(tmp_path, capsys):
    rc, out = _plan(tmp_path, _with_entry(RAYJOB, "fast ", "fast --model=org/unknown "), capsys)
    assert rc == 1 and "the shape of 'org/unknown' is not known offline" in out
    doc = copy.deepcopy(RAYJOB)
    del doc["spec"]["rayClusterSpec"]["headGroupSpec"]
    rc, out = _plan(tmp_path, doc, capsys)
    assert rc == 2 and "spec.rayClusterSpec.headGroupSpec is missing" in out
    with pytest.raises(ManifestError, match="does not run `python -m vgrout_ray.driver`"):
        p = tmp_path / "e.yaml"
        p.write_text(yaml.safe_dump(_with_entry(RAYJOB, "python -m vgrout_ray.driver", "python train.py")))
        from vgrout_ray.cluster.plan import plan
        plan(read_manifest(p))
    rc, out = _plan(tmp_path, _with_entry(RAYJOB, "--grader.num-actors=60", "--grader.num-actors=0"), capsys)
    assert rc == 1 and "grader.num_actors: must be >= 1" in out


def test_driver_memory_check_uses_the_clusters_gpu_type():
    cfg = parse_config(["fast", "--rollout.backend", "vllm", "--rollout.gpus-per-actor", "1",
                        "--cluster.learner-gpus", "1"])
    h100 = [{"Alive": True, "Resources": {"CPU": 16.0, "GPU": 1.0, "accelerator_type:H100": 1.0}}]
    assert any("fits" in line for line in driver_memory_check(cfg, h100))
    l4 = [{"Alive": True, "Resources": {"CPU": 16.0, "GPU": 1.0, "accelerator_type:L4": 1.0}}]
    with pytest.raises(ConfigError, match="learner .* DOES NOT FIT"):
        driver_memory_check(cfg, l4)
    cpu = parse_config(["smoke"])
    assert driver_memory_check(cpu, l4) == []


def test_known_shape_matches_the_published_size():
    assert 4.0e9 < mp.KNOWN_SHAPES["Qwen/Qwen3-4B"].params < 4.05e9
    assert 8.1e9 < mp.KNOWN_SHAPES["Qwen/Qwen3-8B"].params < 8.3e9


def test_launcher_yaml_without_the_shared_mount_or_token_fails(tmp_path, capsys):
    text = (REPO / "deploy" / "cluster.yaml").read_text()
    doc = yaml.safe_load(text)
    entry = next(l for l in text.splitlines() if l.startswith("# vgrout-entrypoint:"))
    doc["setup_commands"] = [c for c in doc["setup_commands"] if "mount" not in c]
    doc["head_start_ray_commands"] = [c.replace("RAY_AUTH_MODE=token ", "")
                                      for c in doc["head_start_ray_commands"]]
    p = tmp_path / "c.yaml"
    p.write_text(entry + "\n" + yaml.safe_dump(doc))
    rc = main([str(p)])
    out = capsys.readouterr().out
    assert rc == 1, out
    assert "--out-dir /mnt/vgrout/out: group head (driver) mounts no volume there" in out
    assert "--svd-cache /mnt/vgrout/svd_cache: group rollout_gpu (rollout)" in out
    assert "auth: the cluster does not use token auth" in out
