"""Datasets as they are published (MOTChallenge, JDE lists, CrowdHuman, VOC, COCO subsets, tag lists): the
counts their rules give, typed part options, ignore regions, sampling weights and one epoch of training."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest
import torch.distributed as dist
import yaml

from tests.conftest import TINY_MODEL
from tests.data import published
from tests.data.published import COUNTS
from unified.commands import train as train_command
from unified.config import ConfigError
from unified.data import MultiTaskDataset, build_dataloader, collate, load_dataset_yaml
from unified.data.mot import MotOptions, read_mot
from unified.data.sampling import WeightedSampler, part_shares, sample_weights
from unified.data.summary import SUMMARY_FILE, PartTally
from unified.data.validate import DataError, ProblemLog

PERSON = ["person", "car"]


def layout(name: str, root: Path) -> tuple[list[str], list[str], dict]:
    """The dataset names, scene labels and one part for a layout, its files written under ``root``."""
    if name == "mot":
        published.mot17_sequence(root / "MOT17" / "train")
        options = {"min_visibility": 0.25}
        part = {"format": "mot", "label_kinds": ["boxes", "identities", "ignore"], "options": options,
                "train": "MOT17/train", "val": "MOT17/train/MOT17-02-FRCNN"}  # fmt: skip
        return ["pedestrian"], [], part
    if name == "mot15":
        published.mot15_sequence(root / "2DMOT2015" / "train")
        part = {"format": "mot", "label_kinds": ["boxes", "identities"], "train": "2DMOT2015/train",
                "val": "2DMOT2015/train"}  # fmt: skip
        return ["pedestrian"], [], part
    if name == "jde":
        published.jde_root(root / "jde")
        part = {"format": "jde", "label_kinds": ["boxes", "identities"], "options": {"root": "jde"},
                "train": ["jde/data/mot17.train", "jde/data/caltech.train"], "val": "jde/data/caltech.train"}  # fmt: skip
        return ["pedestrian"], [], part
    if name == "crowdhuman":
        published.crowdhuman(root / "CrowdHuman")
        split = {"annotations": "CrowdHuman/annotation_train.odgt", "images": "CrowdHuman/Images"}
        part = {"format": "crowdhuman", "label_kinds": ["boxes", "identities", "ignore"],
                "options": {"box": "full"}, "train": split, "val": split}  # fmt: skip
        return ["pedestrian"], [], part
    if name == "voc":
        published.voc_root(root / "VOCdevkit" / "VOC2007")
        part = {"format": "voc", "label_kinds": ["boxes", "ignore"],
                "train": "VOCdevkit/VOC2007/ImageSets/Main/trainval.txt", "val": "VOCdevkit/VOC2007"}  # fmt: skip
        return PERSON, [], part
    if name == "coco_subset":
        published.coco_with_more_classes(root / "coco")
        split = {"annotations": "coco/instances_train.json", "images": "coco/images"}
        part = {"format": "coco", "label_kinds": ["boxes"], "options": {"categories": {"person": "pedestrian"}},
                "train": split, "val": split}  # fmt: skip
        return ["pedestrian"], [], part
    if name == "tags":
        published.tags_csv(root / "tagged")
        part = {
            "format": "tags",
            "label_kinds": ["image_labels"],
            "train": "tagged/tags.csv",
            "val": "tagged/tags.csv",
        }
        return PERSON, ["night"], part
    raise KeyError(name)


def write_yaml(root: Path, names: list[str], parts: list[dict], scene_labels: list[str] = ()) -> Path:
    path = root / "data.yaml"
    body = {"names": names, "scene_labels": list(scene_labels), "parts": parts}
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def load_layout(tmp_path: Path, name: str, split: str = "train", **part_changes):
    names, scenes, part = layout(name, tmp_path)
    part = {"name": name, **part, **part_changes}
    return load_dataset_yaml(write_yaml(tmp_path, names, [part], scenes), split)


# ------------------------------------------------------------------------------------------- counts


@pytest.mark.parametrize("name", ["mot", "mot15", "jde", "crowdhuman", "voc", "coco_subset", "tags"])
def test_each_published_layout_gives_its_documented_counts(tmp_path, name):
    summary = load_layout(tmp_path, name).parts[0]
    expected = COUNTS[name]
    for key in ("images", "boxes", "ignored", "identities", "tags"):
        if key in expected:
            assert getattr(summary, key) == expected[key], (key, summary)
    if name == "mot":
        assert summary.sequences == {"MOT17-02-FRCNN": COUNTS["mot_sequence"]}
    if name == "mot15":
        assert summary.dropped == {"not_considered": 1}
    if name == "voc":
        assert summary.dropped == {"other_category": 1} and summary.details == {"other_category": {"dog": 1}}
    if name == "coco_subset":
        assert summary.details == {"other_category": COUNTS["coco_subset"]["other_category"]}


def test_mot_distractors_are_ignore_regions_that_reach_the_batch(tmp_path):
    records, info = load_layout(tmp_path, "mot")
    frame1 = records[0]
    assert frame1.labels["ignore"].tolist() == [False, True, True]  # id 1; id 2 (10 % visible); static person
    assert frame1.labels["identities"].tolist() == [0, -1, -1]
    batch = collate([MultiTaskDataset(records, 64, False, info=info)[i] for i in range(3)])
    assert batch["ignore"].sum().item() == COUNTS["mot"]["ignored"]
    assert len(batch["ignore"]) == len(batch["boxes"]) == len(batch["identities"])


def test_a_part_without_ignore_leaves_ignore_regions_out_and_counts_them(tmp_path):
    loaded = load_layout(tmp_path, "crowdhuman", label_kinds=["boxes"])
    summary = loaded.parts[0]
    assert summary.boxes == 3 and summary.ignored == 0 and summary.dropped == {"ignore_region": 2}
    assert all("ignore" not in r.labels for r in loaded.records)


def test_mot15_det_txt_with_a_score_threshold(tmp_path):
    loaded = load_layout(tmp_path, "mot15", options={"labels": "det", "min_score": 0.5})
    summary = loaded.parts[0]
    assert summary.boxes == COUNTS["mot15_det"]["boxes"] and summary.identities == 0
    assert summary.dropped == {"low_score": 1}


def test_mot20_also_counts_non_motorised_vehicles_as_distractors(tmp_path):
    rows = ["1,1,4,4,12,20,1,1,1", "1,2,30,6,10,18,0,6,1"]
    for name in ("MOT20-01", "MOT17-04-SDP"):
        seq = published._text(tmp_path / name / "gt" / "gt.txt", "\n".join(rows) + "\n").parents[1]
        published.write_image(seq / "img1" / "000001.jpg", 64, 48)
    tally = PartTally()
    read_mot(tmp_path, ["pedestrian"], ["boxes", "ignore"], ProblemLog(), tally=tally)
    assert tally.sequences["MOT20-01"] == {"kept": 1, "distractor": 1}
    assert tally.sequences["MOT17-04-SDP"] == {"kept": 1, "other_class": 1}


def test_mot_classes_outside_the_table_are_problems_naming_file_and_line(tmp_path):
    seq = published.mot17_sequence(tmp_path)
    gt = seq / "gt" / "gt.txt"
    gt.write_text(gt.read_text() + "2,9,10,10,5,5,1,14,1\n")
    log = ProblemLog()
    read_mot(seq, ["pedestrian"], ["boxes"], log, options=MotOptions())
    assert log.counts() == {"unknown_class": 1} and log.problems[0].where == f"{gt}:12"
    # the same rows with the classes as indices into a two-class dataset: class 7 is a problem too
    log = ProblemLog()
    read_mot(seq, PERSON, ["boxes"], log)
    assert {p.kind for p in log.problems} == {"unknown_class"}


def test_broken_published_files_are_problems_with_file_and_line(tmp_path):
    odgt, _ = published.crowdhuman(tmp_path / "ch")
    odgt.write_text(odgt.read_text() + "{not json\n")
    names, _, part = layout("voc", tmp_path)
    xml = tmp_path / "VOCdevkit/VOC2007/Annotations/000002.xml"
    xml.write_text(xml.read_text().replace("<xmin>10</xmin>", "<xmin>ten</xmin>"))
    split = {"annotations": str(odgt), "images": str(tmp_path / "ch" / "Images")}
    ch = {"name": "ch", "format": "crowdhuman", "train": split}
    with pytest.raises(DataError) as error:
        load_dataset_yaml(write_yaml(tmp_path, names, [{"name": "voc", **part}, ch]), "train")
    message = str(error.value)
    assert f"{odgt}:3: not a JSON object" in message and f"{xml}:9: car: <bndbox>" in message


def test_a_tag_outside_the_vocabulary_names_file_and_line_and_a_bom_header_is_read(tmp_path):
    names, scenes, part = layout("tags", tmp_path)
    csv = tmp_path / "tagged" / "tags.csv"
    csv.write_text("\ufeff" + csv.read_text().replace("photos/b.jpg,car", "photos/b.jpg,car dog"))
    with pytest.raises(DataError, match=rf"{csv}:3: tag 'dog' is not one of"):
        load_dataset_yaml(write_yaml(tmp_path, names, [{"name": "t", **part}], scenes), "train")


def test_jde_list_lines_without_a_root_are_relative_to_the_list(tmp_path):
    root, data = published.jde_root(tmp_path / "jde")
    listing = root / "mot17.txt"  # beside the MOT17 folder, so its lines resolve without a root
    listing.write_text((data / "mot17.train").read_text())
    part = {"name": "j", "format": "jde", "label_kinds": ["boxes", "identities"], "train": str(listing)}
    summary = load_dataset_yaml(write_yaml(tmp_path, ["pedestrian"], [part]), "train").parts[0]
    assert (summary.images, summary.boxes, summary.identities) == (2, 4, 2)


# ------------------------------------------------------------------------------------------ options


def test_unknown_or_mistyped_part_options_name_the_key_and_line(tmp_path):
    names, _, part = layout("mot", tmp_path)
    part["options"] = {"min_visibilty": 0.3}
    path = write_yaml(tmp_path, names, [{"name": "m", **part}])
    with pytest.raises(
        ConfigError,
        match=r"line \d+: key 'parts.0.options.min_visibilty': unknown key. Did you mean 'min_visibility'",
    ):
        load_dataset_yaml(path, "train")
    part["options"] = {"min_visibility": 2}
    with pytest.raises(ConfigError, match=r"key 'parts.0.options.min_visibility': must be in 0..1"):
        load_dataset_yaml(write_yaml(tmp_path, names, [{"name": "m", **part}]), "train")
    part["options"] = {"class_name": "person"}
    with pytest.raises(ConfigError, match=r"key 'parts.0.options.class_name': class 'person' is not one of"):
        load_dataset_yaml(write_yaml(tmp_path, names, [{"name": "m", **part}]), "train")
    tags = {
        "name": "t",
        "format": "tags",
        "label_kinds": ["image_labels"],
        "train": "x.csv",
        "options": {"a": 1},
    }
    with pytest.raises(ConfigError, match=r"key 'parts.0.options': the tags format takes no options"):
        load_dataset_yaml(write_yaml(tmp_path, names, [tags]), "train")


def test_a_coco_rename_to_a_class_the_dataset_lacks_is_a_config_error(tmp_path):
    names, _, part = layout("coco_subset", tmp_path)
    part["options"] = {"categories": {"person": "human"}}
    with pytest.raises(ConfigError, match=r"key 'parts.0.options.categories.person': class 'human'"):
        load_dataset_yaml(write_yaml(tmp_path, names, [{"name": "c", **part}]), "train")


# ------------------------------------------------------------------------------------------ weights


def test_part_shares_follow_the_weights_and_default_to_image_counts():
    assert part_shares({"a": 30, "b": 10}, {"a": None, "b": None}) == {"a": 0.75, "b": 0.25}
    assert part_shares({"a": 30, "b": 10}, {"a": 1.0, "b": 3.0}) == {"a": 0.25, "b": 0.75}
    with pytest.raises(ValueError, match=r"parts \['c'\] give no sampling weight"):
        part_shares({"a": 30, "b": 10, "c": 20}, {"a": 2.0, "b": 2.0, "c": None})


def test_the_weighted_sampler_is_seeded_per_epoch_and_splits_its_draws_over_ranks():
    weights = [1.0] * 30 + [9.0] * 10  # the second part: 75 % of the draws
    single = WeightedSampler(weights, 40, seed=3)
    first = list(single)
    assert first == list(WeightedSampler(weights, 40, seed=3)) and len(first) == 40
    single.set_epoch(1)
    assert list(single) != first
    drawn = [list(WeightedSampler(weights, 40, seed=3, rank=r, world_size=2, drop_last=True)) for r in (0, 1)]
    assert drawn[0] + drawn[1] != first and sorted(drawn[0] + drawn[1]) == sorted(first)
    many = list(WeightedSampler(weights, 4000, seed=0))
    assert 0.7 < np.mean([i >= 30 for i in many]) < 0.8


def test_the_loader_draws_by_weight_under_a_process_group(tmp_path):
    records, info = load_layout(tmp_path, "voc")
    dataset = MultiTaskDataset(records, 64, False, info=info)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        loader = build_dataloader(
            dataset, 1, shuffle=True, distributed=True, drop_last=True, sample_weights=[0.0, 1.0]
        )
    finally:
        dist.destroy_process_group()
    assert isinstance(loader.sampler, WeightedSampler)
    assert [batch["meta"][0]["image_id"] for batch in loader] == [1, 1]
    plain = build_dataloader(dataset, 1, shuffle=True)
    assert not isinstance(plain.sampler, WeightedSampler)


def test_a_split_without_weights_samples_as_before(tmp_path):
    loaded = load_layout(tmp_path, "voc")
    assert loaded.sample_weights() is None and loaded.parts[0].share == 1.0
    assert sample_weights(loaded.records, {"voc": 2.0}) == [0.5, 0.5]


# ----------------------------------------------------------------------------------------- training


def _train(tmp_path: Path, data: Path, tasks: str) -> Path:
    model = tmp_path / "model.yaml"
    model.write_text(yaml.safe_dump(TINY_MODEL))
    overrides = {
        "model": model, "data": data, "tasks": f"[{tasks}]", "train.epochs": 1, "train.batch_size": 2,
        "train.img_size": 64, "train.workers": 0, "train.device": "cpu", "train.precision": "fp32",
        "optim.warmup_epochs": 0, "eval.interval": 0, "project": tmp_path / "runs", "name": "run",
    }  # fmt: skip
    if "jde" in tasks:
        overrides["task_options.jde.embedding_dim"] = 8
    assert train_command.main(["--no-progress", *(f"{k}={v}" for k, v in overrides.items())]) == 0
    return tmp_path / "runs" / "run"


@pytest.mark.parametrize("name", ["mot", "jde", "crowdhuman", "voc", "coco_subset"])
def test_each_layout_trains_one_epoch_alone(tmp_path, name, capsys):
    names, scenes, part = layout(name, tmp_path)
    run = _train(tmp_path, write_yaml(tmp_path, names, [{"name": name, **part}], scenes), "detect")
    summary = json.loads((run / SUMMARY_FILE).read_text())
    assert summary["train"][0]["boxes"] == COUNTS[name]["boxes"]
    assert f"train {name} ({part['format']})" in capsys.readouterr().out


def test_every_layout_trains_one_epoch_mixed_with_the_others_by_weight(tmp_path, capsys):
    parts = []
    for name in ("mot", "mot15", "jde", "crowdhuman", "voc", "coco_subset", "tags"):
        _, _, part = layout(name, tmp_path)
        parts.append({"name": name, **part, "weight": 1.0})
    parts[-1]["weight"] = 6.0  # the tag list: as often as the six others together
    # a two-class dataset: MOTChallenge's pedestrians and CrowdHuman's persons are named, COCO's renamed
    parts[0]["options"].update(classes="motchallenge", class_name="pedestrian")
    parts[3]["options"]["class_name"] = "pedestrian"
    parts[5]["options"] = {"categories": {"person": "pedestrian"}}
    for voc in (tmp_path / "VOCdevkit/VOC2007/Annotations").iterdir():
        voc.write_text(voc.read_text().replace("<name>person</name>", "<name>pedestrian</name>"))
    tags = tmp_path / "tagged" / "tags.csv"
    tags.write_text(tags.read_text().replace("person", "pedestrian"))
    run = _train(tmp_path, write_yaml(tmp_path, ["pedestrian", "car"], parts, ["night"]), "detect, jdc, jde")
    summary = {p["part"]: p for p in json.loads((run / SUMMARY_FILE).read_text())["train"]}
    assert summary["tags"]["tags"] == COUNTS["tags"]["tags"] and summary["mot"]["ignored"] == 5
    assert summary["tags"]["share"] == 0.5 and summary["jde"]["share"] == pytest.approx(1 / 12)
    assert summary["voc"]["boxes"] == 2 and summary["coco_subset"]["dropped"] == {"other_category": 1}
    assert "MOT17-02-FRCNN: 3 kept" in capsys.readouterr().out
    assert (run / "weights" / "last.pt").is_file()
    # jde tracked the MOT17 sequence, whose ignore regions are neither objects nor false positives
    assert json.loads((run / "metrics.json").read_text())["jde"]["MOTA"] is not None


def test_weights_are_given_for_every_training_part_or_none(tmp_path):
    _, _, mot = layout("mot15", tmp_path)
    _, _, jde = layout("jde", tmp_path)
    parts = [{"name": "a", **mot, "weight": 2.0}, {"name": "b", **jde}]
    with pytest.raises(ConfigError, match=r"key 'parts.1': part 'b' gives no weight while \['a'\] do"):
        load_dataset_yaml(write_yaml(tmp_path, ["pedestrian"], parts), "train")
    parts[1]["weight"] = 0
    with pytest.raises(ConfigError, match=r"key 'parts.1.weight': must be a positive number"):
        load_dataset_yaml(write_yaml(tmp_path, ["pedestrian"], parts), "train")
