"""The data layer against real files (../shared/data) and generated fixtures of every format."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dia.config import load_config
from dia.data import DataError, DataMissing, DataOffline, folders, load_dataset, load_for_config
from dia.data.check import check_datasets, format_check, state
from dia.data.synthetic import load_synthetic


def _png(path: Path, value: int, size: tuple[int, int] = (40, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path)


# -- real data ---------------------------------------------------------------------------------


def test_pneumonia_counts(shared_data, results_root):
    splits = load_dataset("pneumonia", data_root=shared_data, results_root=results_root)
    assert splits.train.shape == (1214, 3, 28, 28) and splits.train.dtype == torch.uint8
    assert int((splits.test_labels == 0).sum()) == 234
    assert int((splits.test_labels == 1).sum()) == 390
    assert splits.pool.shape[0] == 3494 and bool((splits.pool_labels == 1).all())
    # the official val split, labelled for model comparison: 135 normal, 389 pneumonia
    assert splits.val.shape == (524, 3, 28, 28) and splits.val_ids[0] == "val_0"
    assert splits.counts()["val_normal"] == 135 and splits.counts()["val_anomalous"] == 389
    assert not set(splits.val_ids) & (set(splits.train_ids) | set(splits.test_ids))
    assert not any(results_root.iterdir())  # an official split writes nothing


def test_braintumor_ddad_split_with_missing_files(shared_data, results_root, monkeypatch):
    monkeypatch.setattr(folders, "_NOTICED", set())  # once per process: as if the first load
    with pytest.warns(UserWarning, match="4 of the 3200 images its data.json names are missing"):
        splits = load_dataset("braintumor", data_root=shared_data, results_root=results_root,
                              image_size=32)
    counts = splits.counts()
    assert counts == {"train_normal": 998, "test_normal": 599, "test_anomalous": 600,
                      "pool_normal": 399, "pool_anomalous": 600, "val_normal": 0,
                      "val_anomalous": 0}
    assert splits.train.shape[1:] == (3, 32, 32)
    assert not set(splits.pool_ids) & set(splits.test_ids)


def test_oct_sample_through_the_folder_loader(shared_data, tmp_path, results_root):
    root = tmp_path / "root"
    for name in ("CNV", "DME", "DRUSEN", "NORMAL"):
        files = sorted((shared_data / "oct2017_sample" / name).iterdir())
        for split, part in (("train", files[:8]), ("test", files[8:])):
            (root / "OCT2017" / split / name).mkdir(parents=True)
            for f in part:
                shutil.copy(f, root / "OCT2017" / split / name / f.name)
    splits = load_dataset("oct", data_root=root, results_root=results_root, image_size=64)
    assert splits.counts()["train_normal"] == 8
    assert splits.counts()["test_normal"] == 4 and splits.counts()["test_anomalous"] == 12
    assert splits.counts()["pool_anomalous"] == 24
    assert splits.train.shape == (8, 3, 64, 64)


def test_an_image_file_that_is_empty_or_not_an_image_makes_the_dataset_broken(
        shared_data, tmp_path, results_root):
    root = tmp_path / "root"
    for split in ("train", "test"):
        for name in ("CNV", "DME", "DRUSEN", "NORMAL"):
            folder = root / "OCT2017" / split / name
            folder.mkdir(parents=True)
            shutil.copy(sorted((shared_data / "oct2017_sample" / name).iterdir())[0], folder)
    rows = {r["dataset"]: r for r in check_datasets(root, results_root)}
    assert state(rows["oct"]) == "yes"
    (root / "OCT2017" / "train" / "NORMAL" / "zero.jpeg").write_bytes(b"")  # a failed copy
    (root / "OCT2017" / "test" / "DME" / "page.png").write_text("<html>not found</html>")
    rows = {r["dataset"]: r for r in check_datasets(root, results_root)}
    assert state(rows["oct"]) == "BROKEN"
    assert re.search(r"2 of 10 oct images are empty or not PNG, JPEG, BMP or TIFF files: "
                     r"\S+train/NORMAL/zero\.jpeg, \S+test/DME/page\.png; replace or delete them",
                     rows["oct"]["problem"])


def test_kvasir_seeded_split_written_once_and_reused(shared_data, tmp_path, results_root):
    root = tmp_path / "root"
    polyps = sorted((shared_data / "kvasir_seg_polyps_subset" / "polyps").iterdir())[:6]
    (root / "kvasir" / "polyps").mkdir(parents=True)
    for f in polyps:
        shutil.copy(f, root / "kvasir" / "polyps" / f.name)
    for g, name in enumerate(("normal-cecum", "normal-pylorus", "normal-z-line")):
        for i in range(10):
            _png(root / "kvasir" / name / f"{i}.jpg", 20 * g + i)
    first = load_dataset("kvasir", data_root=root, results_root=results_root, image_size=32)
    csv_path = results_root / "splits" / "kvasir.csv"
    assert csv_path.is_file()
    assert first.counts()["test_normal"] == 6  # 20 % of 10, per normal class
    assert first.counts()["test_anomalous"] == 6 and first.counts()["train_normal"] == 24
    stamp = csv_path.stat().st_mtime_ns
    _png(root / "kvasir" / "normal-cecum" / "new.jpg", 99)  # a new file does not move the split
    second = load_dataset("kvasir", data_root=root, results_root=results_root, image_size=32)
    assert second.test_ids == first.test_ids and second.train_ids == first.train_ids
    assert csv_path.stat().st_mtime_ns == stamp
    whole = csv_path.read_text()  # damaged, it is refused: read as it is, the test set changes
    lines = whole.splitlines()
    last, n = lines[-1], len(lines)  # an anomalous test row: path,1,test,polyps
    train = next(i for i, line in enumerate(lines, 1) if ",0,train," in line)
    for text, says in ((whole[:-len(",test,polyps\n") + 3], "ends in the middle of a row"),
                       (whole.replace(last, last.replace(",1,test", ",1,tst")),
                        f"line {n} is no row"),
                       (whole.replace(last, last.split(",")[0]), f"line {n} is no row"),
                       (whole.replace(last, last + ",x"), f"line {n} is no row"),
                       (whole.replace(",0,train", ",", 1), f"line {train} is no row"),
                       (whole.replace(last, "\n\n" + last + ",x"), f"line {n + 2} is no row")):
        csv_path.write_text(text)
        with pytest.raises(DataError, match=f"split file {re.escape(str(csv_path))} {says}"):
            load_dataset("kvasir", data_root=root, results_root=results_root, image_size=32)
    csv_path.write_text(whole)


# -- generated fixtures of the other formats ---------------------------------------------------


def test_sars_cov2_and_split_stability(tmp_path, results_root):
    root = tmp_path / "root"
    for i in range(10):
        _png(root / "sars_cov2" / "non-COVID" / f"Non-Covid ({i}).png", i)
        _png(root / "sars_cov2" / "COVID" / f"Covid ({i}).png", 100 + i)
    a = load_dataset("sars_cov2", data_root=root, results_root=results_root, image_size=16)
    assert a.counts()["train_normal"] == 8 and a.counts()["test_anomalous"] == 10
    assert all(i.startswith("non-COVID/") for i in a.train_ids)
    (results_root / "splits" / "sars_cov2.csv").unlink()
    b = load_dataset("sars_cov2", data_root=root, results_root=results_root, image_size=16)
    assert a.test_ids == b.test_ids  # the same seed gives the same split


def test_aptos_grades(tmp_path, results_root):
    base = tmp_path / "root" / "aptos2019"
    grades = [0] * 10 + [1, 2, 3, 4]
    lines = ["id_code,diagnosis"] + [f"img{i},{g}" for i, g in enumerate(grades)]
    (base).mkdir(parents=True)
    (base / "train.csv").write_text("\n".join(lines) + "\n")
    for i in range(len(grades)):
        _png(base / "train_images" / f"img{i}.png", i)
    splits = load_dataset("aptos", data_root=tmp_path / "root", results_root=results_root,
                          image_size=16)
    assert splits.counts()["train_normal"] == 8
    assert splits.counts()["test_normal"] == 2 and splits.counts()["test_anomalous"] == 4
    # saved by a spreadsheet as "CSV UTF-8": a byte-order mark before the first column's name
    from dia.data.seeded_split import split_csv_path

    split = split_csv_path("aptos", results_root)
    split.unlink()  # written once from train.csv, then read instead of it
    (base / "train.csv").write_bytes(b"\xef\xbb\xbf" + (base / "train.csv").read_bytes())
    again = load_dataset("aptos", data_root=tmp_path / "root", results_root=results_root,
                         image_size=16)
    assert again.counts() == splits.counts()
    for table, says in ((b"\xff\xfe\x00\x01garbage", "cannot be read as a UTF-8 CSV"),
                        ("\n".join(lines[:-1] + ["img13,9"]).encode(), "diagnosis 9 of img13")):
        (base / "train.csv").write_bytes(table)
        split.unlink(missing_ok=True)
        with pytest.raises(DataError, match=says):
            load_dataset("aptos", data_root=tmp_path / "root", results_root=results_root)


def test_breast_normal_is_label_one(tmp_path, results_root):
    rng = np.random.default_rng(0)
    arrays = {f"{s}_images": rng.integers(0, 255, (n, 28, 28), dtype=np.uint8)
              for s, n in (("train", 10), ("val", 2), ("test", 6))}
    arrays["train_labels"] = np.array([[1]] * 7 + [[0]] * 3, np.uint8)
    arrays["val_labels"] = np.array([[1], [0]], np.uint8)
    arrays["test_labels"] = np.array([[1]] * 4 + [[0]] * 2, np.uint8)
    (tmp_path / "medmnist").mkdir()
    np.savez(tmp_path / "medmnist" / "breastmnist.npz", **arrays)
    splits = load_dataset("breast", data_root=tmp_path, results_root=results_root)
    assert splits.train.shape[0] == 7
    assert splits.test_labels.tolist() == [0, 0, 0, 0, 1, 1]  # malignant = anomalous
    assert splits.val_labels.tolist() == [0, 1]
    assert torch.equal(splits.train[0, 0], torch.from_numpy(arrays["train_images"][0]))
    # a file without the val arrays still loads, with an empty val split
    np.savez(tmp_path / "medmnist" / "breastmnist.npz",
             **{k: v for k, v in arrays.items() if not k.startswith("val")})
    no_val = load_dataset("breast", data_root=tmp_path, results_root=results_root)
    assert no_val.val.shape[0] == 0 and no_val.counts()["val_anomalous"] == 0
    # gray images with their channel axis kept, (N, 28, 28, 1), load as the same images
    np.savez(tmp_path / "medmnist" / "breastmnist.npz",
             **{k: v[..., None] if k.endswith("images") else v for k, v in arrays.items()})
    kept_axis = load_dataset("breast", data_root=tmp_path, results_root=results_root)
    assert torch.equal(kept_axis.train, splits.train) and torch.equal(kept_axis.test, splits.test)


def test_synthetic_is_seeded_and_fine_grained():
    a, b = load_synthetic(28), load_synthetic(28)
    assert torch.equal(a.train, b.train) and torch.equal(a.test, b.test)
    big = load_synthetic(224)
    assert big.train.shape[-1] == 224 and big.test_labels.sum() == 150
    normal = a.test[a.test_labels == 0].float()
    anomalous = a.test[a.test_labels == 1].float()
    # the lesions are faint: the class means differ by far less than the texture's spread
    assert (normal.mean() - anomalous.mean()).abs() < 0.25 * normal.std()


def test_load_for_config_applies_size_and_caps():
    cfg = load_config("smoke", dataset="synthetic")
    splits = load_for_config(cfg)
    assert splits.train.shape[0] == cfg.data.max_train
    assert int((splits.test_labels == 1).sum()) == cfg.data.max_test_per_class
    val = splits.counts()
    assert val["val_normal"] == val["val_anomalous"] == cfg.data.max_test_per_class  # of 75 each
    again = load_for_config(cfg)
    assert again.test_ids == splits.test_ids and again.val_ids == splits.val_ids
    # the val split is drawn apart from the test split: none of its images is a test image
    full = load_synthetic(28)
    test_images = {bytes(image.numpy()) for image in full.test}
    assert not any(bytes(image.numpy()) in test_images for image in full.val)


# -- bad input ---------------------------------------------------------------------------------


def test_unknown_key():
    with pytest.raises(DataError, match="known datasets: pneumonia"):
        load_dataset("cifar10")


def test_missing_root_and_folder(tmp_path, results_root):
    with pytest.raises(DataMissing, match="does not exist; set DIA_DATA_ROOT"):
        load_dataset("kvasir", data_root=tmp_path / "nowhere", results_root=results_root)
    (tmp_path / "a_file").write_text("")
    with pytest.raises(DataMissing, match="a_file is a file, not a folder; move it away"):
        load_dataset("kvasir", data_root=tmp_path / "a_file", results_root=results_root)
    with pytest.raises(DataMissing, match="missing folder .*kvasir"):
        load_dataset("kvasir", data_root=tmp_path, results_root=results_root)
    with pytest.raises(DataMissing, match="pneumoniamnist.npz"):
        load_dataset("pneumonia", data_root=tmp_path, results_root=results_root)
    assert not any(results_root.iterdir())


def test_empty_class_folder(tmp_path, results_root):
    _png(tmp_path / "sars_cov2" / "non-COVID" / "a.png", 1)
    (tmp_path / "sars_cov2" / "COVID").mkdir(parents=True)
    with pytest.raises(DataError, match="COVID holds no images"):
        load_dataset("sars_cov2", data_root=tmp_path, results_root=results_root)
    assert not (results_root / "splits").exists()


def test_corrupt_image_names_the_file_and_writes_nothing(tmp_path, results_root):
    for i in range(5):
        _png(tmp_path / "sars_cov2" / "non-COVID" / f"{i}.png", i)
        _png(tmp_path / "sars_cov2" / "COVID" / f"{i}.png", i)
    (tmp_path / "sars_cov2" / "COVID" / "3.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"cannot decode image .*COVID/3.png: .*replace it from "
                                        r"the dataset.s archive"):
        load_dataset("sars_cov2", data_root=tmp_path, results_root=results_root, image_size=8)
    assert not (results_root / "splits").exists()


def test_corrupt_npz_and_wrong_keys(tmp_path, results_root):
    (tmp_path / "medmnist").mkdir()
    (tmp_path / "medmnist" / "pneumoniamnist.npz").write_bytes(b"garbage")
    with pytest.raises(DataError, match="cannot read .*pneumoniamnist.npz"):
        load_dataset("pneumonia", data_root=tmp_path, results_root=results_root)
    np.savez(tmp_path / "medmnist" / "pneumoniamnist.npz", images=np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(DataError, match="lacks the key"):
        load_dataset("pneumonia", data_root=tmp_path, results_root=results_root)
    good = {f"{s}_{kind}": np.zeros((4, 28, 28) if kind == "images" else (4, 1), np.uint8)
            for s in ("train", "test") for kind in ("images", "labels")}
    for bad, says in (({"test_labels": np.zeros((3, 1), np.uint8)}, r"counts differ \(4 against 3"),
                      ({"train_images": np.zeros((4, 28, 28), np.float32)},
                       "train_images: expected uint8"),
                      ({"train_images": np.zeros((4, 28, 28, 2), np.uint8)}, r"28, 28, 2\)"),
                      ({"test_images": np.zeros((4, 32, 28), np.uint8)}, "expected square"),
                      ({"test_images": np.zeros((4, 0, 0), np.uint8)}, "at least 1×1 pixels"),
                      ({"test_labels": np.array([[0], [1], [5], [6]], np.uint8)},
                       "test_labels hold 5, 6, besides 0 and 1")):
        np.savez(tmp_path / "medmnist" / "pneumoniamnist.npz", **{**good, **bad})
        with pytest.raises(DataError, match=says):
            load_dataset("pneumonia", data_root=tmp_path, results_root=results_root)
        row = next(r for r in check_datasets(tmp_path, results_root) if r["dataset"] == "pneumonia")
        assert state(row) == "BROKEN"  # `dia data check` says so before any run


def test_a_folder_where_the_npz_goes_is_broken_not_missing(tmp_path, results_root):
    """`dia data check` must not advise `dia data fetch`, which refuses the folder."""
    (tmp_path / "medmnist" / "pneumoniamnist.npz").mkdir(parents=True)
    with pytest.raises(DataError, match="pneumoniamnist.npz is not a file .*move it away"):
        load_dataset("pneumonia", data_root=tmp_path, results_root=results_root)
    row = next(r for r in check_datasets(tmp_path, results_root) if r["dataset"] == "pneumonia")
    assert state(row) == "BROKEN" and "is not a file" in row["problem"]


def test_a_file_where_a_dataset_folder_goes_is_broken_not_missing(tmp_path, results_root):
    (tmp_path / "kvasir").write_text("")
    with pytest.raises(DataError, match="kvasir is a file, where the folder of kvasir belongs"):
        load_dataset("kvasir", data_root=tmp_path, results_root=results_root)
    row = next(r for r in check_datasets(tmp_path, results_root) if r["dataset"] == "kvasir")
    assert state(row) == "BROKEN" and "is a file" in row["problem"]


def test_an_npz_whose_compressed_bytes_are_damaged_is_broken_not_a_crash(tmp_path, results_root):
    """A whole zip (it opens, lists its keys) with damaged deflate data: a bad copy or download."""
    rng = np.random.default_rng(0)
    path = tmp_path / "medmnist" / "pneumoniamnist.npz"
    path.parent.mkdir()
    np.savez_compressed(path, **{f"{s}_{kind}": rng.integers(0, 2, (64, 28, 28) if kind == "images"
                                                            else (64, 1), dtype=np.uint8)
                                 for s in ("train", "test") for kind in ("images", "labels")})
    whole = path.read_bytes()
    # Zero 512 bytes where zlib itself rejects the stream (elsewhere zipfile sees a bad CRC).
    for start in range(len(whole) // 8, len(whole), len(whole) // 16):
        data = bytearray(whole)
        data[start:start + 512] = bytes(512)
        path.write_bytes(bytes(data))
        try:
            with zipfile.ZipFile(path) as archive:
                for name in archive.namelist():
                    archive.read(name)
        except zlib.error:
            break
        except zipfile.BadZipFile:
            continue
    else:
        pytest.fail("no damage found that zlib itself rejects")
    with pytest.raises(DataError, match="cannot read .*pneumoniamnist.npz.*get it again"):
        load_dataset("pneumonia", data_root=tmp_path, results_root=results_root)
    row = next(r for r in check_datasets(tmp_path, results_root) if r["dataset"] == "pneumonia")
    assert state(row) == "BROKEN"


def test_a_test_split_of_one_class_or_no_training_normals_makes_the_dataset_broken(
        tmp_path, results_root):
    (tmp_path / "medmnist").mkdir()
    labels = {"train_labels": np.array([[0], [0], [1], [1]], np.uint8),  # pneumonia: 0 = normal
              "test_labels": np.array([[0], [1], [1], [0]], np.uint8)}
    images = {f"{s}_images": np.zeros((4, 28, 28), np.uint8) for s in ("train", "test")}

    def check_with(**changed):
        np.savez(tmp_path / "medmnist" / "pneumoniamnist.npz", **images, **{**labels, **changed})
        rows = check_datasets(tmp_path, results_root)
        return next(r for r in rows if r["dataset"] == "pneumonia")

    assert state(check_with()) == "yes"
    row = check_with(test_labels=np.ones((4, 1), np.uint8))
    assert state(row) == "BROKEN"
    assert row["problem"] == ("its test split has 0 normal and 4 anomalous images: an AUC needs "
                              "both classes")
    text = format_check([row], tmp_path)
    assert "pneumonia: its test split has 0 normal" in text and "where to get it" not in text
    row = check_with(train_labels=np.ones((4, 1), np.uint8))
    assert state(row) == "BROKEN" and "no normal images to train on" in row["problem"]


def test_split_csv_naming_missing_files(tmp_path, results_root):
    for i in range(5):
        _png(tmp_path / "sars_cov2" / "non-COVID" / f"{i}.png", i)
        _png(tmp_path / "sars_cov2" / "COVID" / f"{i}.png", i)
    load_dataset("sars_cov2", data_root=tmp_path, results_root=results_root, image_size=8)
    (tmp_path / "sars_cov2" / "COVID" / "2.png").unlink()
    with pytest.raises(DataError, match="names 1 file"):
        load_dataset("sars_cov2", data_root=tmp_path, results_root=results_root, image_size=8)
    from dia.data.seeded_split import split_csv_path

    split = split_csv_path("sars_cov2", results_root)
    split.write_text(split.read_text().splitlines()[0] + "\n")  # its rows gone
    with pytest.raises(DataError, match=r"sars_cov2.csv has no test and no train rows .*delete "
                                        "it to split again"):
        load_dataset("sars_cov2", data_root=tmp_path, results_root=results_root, image_size=8)


def test_aptos_csv_naming_missing_images(tmp_path, results_root):
    base = tmp_path / "aptos2019"
    base.mkdir()
    (base / "train.csv").write_text("id_code,diagnosis\na,0\nb,1\n")
    _png(base / "train_images" / "a.png", 1)
    with pytest.raises(DataError, match="names 1 image"):
        load_dataset("aptos", data_root=tmp_path, results_root=results_root)


def test_braintumor_bad_json(tmp_path, results_root):
    (tmp_path / "ddad" / "BrainTumor").mkdir(parents=True)
    (tmp_path / "ddad" / "BrainTumor" / "data.json").write_text(json.dumps({"train": []}))
    with pytest.raises(DataError, match="expected DDAD's layout"):
        load_dataset("braintumor", data_root=tmp_path, results_root=results_root)
    (tmp_path / "ddad" / "BrainTumor" / "data.json").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DataError, match="expected DDAD's layout"):
        load_dataset("braintumor", data_root=tmp_path, results_root=results_root)
    lists = {"0": ["a.png"], "unlabeled": {"0": [], "1": []}}
    for bad in (5, "abc", [3]):  # a string would be three file names, letter by letter
        layout = {"train": {**lists, "0": bad}, "test": {"0": [], "1": []}}
        (tmp_path / "ddad" / "BrainTumor" / "data.json").write_text(json.dumps(layout))
        with pytest.raises(DataError, match="train/0 is not a list of image file names"):
            load_dataset("braintumor", data_root=tmp_path, results_root=results_root)
    (tmp_path / "ddad" / "BrainTumor" / "data.json").unlink()
    (tmp_path / "ddad" / "BrainTumor" / "data.json").mkdir()
    with pytest.raises(DataError, match="data.json cannot be read"):
        load_dataset("braintumor", data_root=tmp_path, results_root=results_root)


def test_a_file_no_reader_foresaw_makes_that_dataset_broken_not_the_check(
        tmp_path, results_root, monkeypatch):
    import dia.data.check

    real = dia.data.check.count_dataset

    def count(key, *args):
        if key == "pneumonia":
            raise PermissionError(13, "Permission denied", "pneumoniamnist.npz")
        return real(key, *args)

    monkeypatch.setattr(dia.data.check, "count_dataset", count)
    rows = {r["dataset"]: r for r in check_datasets(tmp_path, results_root)}
    assert state(rows["pneumonia"]) == "BROKEN"
    assert "Permission denied" in rows["pneumonia"]["problem"]
    assert state(rows["synthetic"]) == "yes"


# -- dia data check ----------------------------------------------------------------------------


def test_data_check_against_shared_data(shared_data, results_root):
    rows = {r["dataset"]: r for r in check_datasets(shared_data, results_root)}
    assert rows["pneumonia"]["present"] and rows["pneumonia"]["train_normal"] == 1214
    assert rows["pneumonia"]["val_normal"] == 135 and rows["braintumor"]["val_normal"] == 0
    assert rows["braintumor"]["present"] and rows["braintumor"]["test_anomalous"] == 600
    assert rows["synthetic"]["present"]
    for key in ("breast", "sars_cov2", "kvasir", "oct", "aptos"):
        assert not rows[key]["present"]
    text = format_check(list(rows.values()), shared_data)
    assert "OCT2017/{train,test}/{CNV,DME,DRUSEN,NORMAL}" in text and "dia data fetch breast" in text


def _braintumor_folder(root: Path, absent: int) -> dict[str, list[str]]:
    """A DDAD BrainTumor folder of 200 tiny images, the first `absent` of them missing."""
    base = root / "ddad" / "BrainTumor"
    names = {part: [f"{part}_{i}.png" for i in range(40)] for part in ("n", "p0", "p1", "t0", "t1")}
    (base / "images").mkdir(parents=True, exist_ok=True)
    (base / "data.json").write_text(json.dumps({
        "train": {"0": names["n"], "unlabeled": {"0": names["p0"], "1": names["p1"]}},
        "test": {"0": names["t0"], "1": names["t1"]}}))
    for name in sum(names.values(), [])[absent:]:
        _png(base / "images" / name, 0, (4, 4))
    return names


def test_data_check_notes_the_few_absent_images_the_loader_goes_on_without(tmp_path,
                                                                           results_root):
    _braintumor_folder(tmp_path, absent=1)  # 1 of 200: within the 1 % the loader allows
    row = next(r for r in check_datasets(tmp_path, results_root) if r["dataset"] == "braintumor")
    assert state(row) == "yes" and "1 of the 200 images its data.json names" in row["note"]
    text = format_check([row], tmp_path)
    assert re.search(r"^braintumor: note: 1 of the 200 images its data.json names are missing",
                     text, re.M)
    _braintumor_folder(tmp_path, absent=0)
    row = next(r for r in check_datasets(tmp_path, results_root) if r["dataset"] == "braintumor")
    assert row["note"] == "" and "braintumor: note:" not in format_check([row], tmp_path)


def test_the_absent_images_notice_is_given_once_under_the_split_file(tmp_path, results_root):
    _braintumor_folder(tmp_path, absent=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # even where every warning is shown
        for _ in range(2):  # a notebook that loads the data twice
            load_dataset("braintumor", data_root=tmp_path, results_root=results_root, image_size=8)
    assert len(caught) == 1 and caught[0].filename.endswith("BrainTumor/data.json")
    row = next(r for r in check_datasets(tmp_path, results_root) if r["dataset"] == "braintumor")
    assert "1 of the 200 images" in row["note"]  # the check notes it all the same
    other = tmp_path / "copy"  # another copy with the same count: its own notice
    _braintumor_folder(other, absent=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_dataset("braintumor", data_root=other, results_root=results_root, image_size=8)
    assert len(caught) == 1 and str(other) in caught[0].filename


def test_data_check_tells_a_broken_dataset_from_a_missing_one(tmp_path, results_root):
    (tmp_path / "medmnist").mkdir()
    (tmp_path / "medmnist" / "pneumoniamnist.npz").write_bytes(b"garbage")
    (tmp_path / "sars_cov2" / "COVID").mkdir(parents=True)  # non-COVID/ absent
    rows = {r["dataset"]: r for r in check_datasets(tmp_path, results_root)}
    assert [state(rows[k]) for k in ("pneumonia", "sars_cov2", "breast", "synthetic")] == [
        "BROKEN", "BROKEN", "MISSING", "yes"]
    assert rows["pneumonia"]["found"] and not rows["pneumonia"]["present"]
    text = format_check(list(rows.values()), tmp_path)
    assert "| BROKEN " in text and "pneumonia: cannot read" in text
    assert re.search(r"sars_cov2: missing folder \S*sars_cov2/non-COVID", text)
    out = subprocess.run([sys.executable, "-m", "dia", "data", "check", "--data-root",
                          str(tmp_path), "--results-root", str(results_root)],
                         capture_output=True, text=True)
    assert out.returncode == 1 and "| BROKEN " in out.stdout  # a script can tell


def test_cli_data_check_and_offline_fetch(shared_data, tmp_path):
    out = subprocess.run([sys.executable, "-m", "dia", "data", "check", "--data-root",
                          str(shared_data), "--results-root", str(tmp_path)],
                         capture_output=True, text=True)
    assert out.returncode == 0 and "| pneumonia" in out.stdout and "MISSING" in out.stdout


def test_cli_fetch_names_a_damaged_file_and_leaves_no_folder_behind(tmp_path, monkeypatch, capsys):
    import urllib.request

    from dia.cli import main

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    deep = tmp_path / "new" / "deeper" / "root"
    assert main(["data", "fetch", "breast", "--data-root", str(deep)]) == 2
    assert "offline" in capsys.readouterr().err and not (tmp_path / "new").exists()
    assert main(["data", "fetch", "breast", "--data-root", ""]) == 2
    assert "--data-root is empty" in capsys.readouterr().err
    (tmp_path / "medmnist").mkdir()
    (tmp_path / "medmnist" / "breastmnist.npz").write_bytes(b"cut short")  # never overwritten
    assert main(["data", "fetch", "breast", "--data-root", str(tmp_path)]) == 2
    assert "delete it" in capsys.readouterr().err  # not reported as fetched


def test_fetch_says_clearly_when_offline(tmp_path, monkeypatch):
    import urllib.request

    from dia.data.medmnist_files import fetch_medmnist

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DataOffline, match="offline"):  # the driver stops fetching on this one
        fetch_medmnist("breast", tmp_path)
    assert not (tmp_path / "medmnist").exists()  # nothing left that looks like a data folder
    (tmp_path / "medmnist").mkdir()  # the user's own folder stays, without a partial file
    with pytest.raises(DataError, match="offline"):
        fetch_medmnist("breast", tmp_path)
    assert (tmp_path / "medmnist").is_dir() and not list((tmp_path / "medmnist").iterdir())
    (tmp_path / "medmnist" / "breastmnist.npz").mkdir()  # a folder where the file goes
    with pytest.raises(DataError, match="breastmnist.npz is not a file"):
        fetch_medmnist("breast", tmp_path)
    from dia import suite

    (tmp_path / "medmnist" / "breastmnist.npz").rmdir()
    (tmp_path / "medmnist" / "pneumoniamnist.npz").mkdir()
    said = []  # the driver names this file's problem, not "offline", and goes on to the next
    suite._available(["pneumonia", "breast"], str(tmp_path), str(tmp_path / "results"),
                     fetch=True, log=said.append)
    assert any("[fetch] pneumonia:" in line and "is not a file" in line for line in said), said
    assert any("[fetch] offline" in line for line in said), said  # breast: tried, offline
    (tmp_path / "medmnist" / "pneumoniamnist.npz").rmdir()
    (tmp_path / "file").write_text("")  # a file where the folder, or the data root, goes
    for root in (tmp_path / "file", tmp_path / "file" / "below"):
        with pytest.raises(DataError, match="a file stands in its way"):
            fetch_medmnist("breast", root)
