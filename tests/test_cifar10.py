from pathlib import Path

import numpy as np
import pytest
import torch

from dse.candidates.evaluation import Evaluator
from dse.config_building import check_held_out
from dse.exceptions import ConfigError, DataError
from dse.training.assets import resolve_asset
from dse.training.cifar10 import (
    CALIBRATION_POOL,
    CIFAR10DataModule,
    half_of_test_set,
    normalize,
    random_crop_flip,
    stratified_subset,
    within_class_rank,
)
from tests.conftest import CIFAR10_NPZ, compose_config, needs_cifar10


def test_shipped_subset_is_stratified_and_loads() -> None:
    dm = CIFAR10DataModule(path="cifar10_test_subset", test_subset=500, subset_seed=3)
    dm.setup("test")
    labels = torch.cat([y for _, y in dm.test_dataloader()])
    assert len(labels) == 500  # no sample dropped
    assert torch.bincount(labels).tolist() == [50] * 10
    x, _ = next(iter(dm.test_dataloader()))
    assert x.dtype == torch.uint8 and x.shape[1:] == (3, 32, 32)


def test_subset_is_seeded() -> None:
    y = np.repeat(np.arange(10), 100)
    assert np.array_equal(stratified_subset(y, 100, 1), stratified_subset(y, 100, 1))
    assert not np.array_equal(stratified_subset(y, 100, 1), stratified_subset(y, 100, 2))
    with pytest.raises(DataError, match="multiple of the 10 classes"):
        stratified_subset(y, 15, 0)


def test_missing_file_says_what_to_do(tmp_path) -> None:
    dm = CIFAR10DataModule(path=str(tmp_path / "nope.npz"))
    with pytest.raises(DataError, match=r"does not exist.*data=cifar10_torchvision"):
        dm.setup("test")


def test_corrupt_file(tmp_path) -> None:
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="Cannot read"):
        CIFAR10DataModule(path=str(bad)).setup("test")


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (lambda d: {**d, "y_test": d["y_test"] + 10}, r"y_test has labels outside 0\.\.9 \(e\.g\. \[10, 11"),
        (lambda d: {**d, "y_test": d["y_test"][:-7]}, "y_test holds 1993 labels for 2000 images"),
        (lambda d: {**d, "y_test": d["y_test"] + 0.5}, "y_test has dtype float64; labels must be integers"),
    ],
)
def test_labels_that_would_score_silently_wrong_are_refused(tmp_path, change, says: str) -> None:
    """Out-of-range labels scored 0% in silence, a short y_test fewer images, float labels truncated."""
    with np.load(resolve_asset("cifar10_test_subset")) as shipped:
        np.savez(tmp_path / "bad.npz", **change(dict(shipped)))
    with pytest.raises(DataError, match=says):
        CIFAR10DataModule(path=str(tmp_path / "bad.npz")).setup("test")


def test_training_on_eval_only_file_is_refused() -> None:
    with pytest.raises(DataError, match="test images only"):
        CIFAR10DataModule(path="cifar10_test_subset").setup("fit")


def test_torchvision_without_data_or_network(tmp_path) -> None:
    with pytest.raises(DataError, match="download=true"):
        CIFAR10DataModule(source="torchvision", path=str(tmp_path), download=False).setup("test")


def test_augmentation_keeps_content() -> None:
    x = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    out = random_crop_flip(x)
    assert out.shape == x.shape and out.dtype == torch.uint8
    # a crop of a zero-padded image: every output pixel is either padding or an input pixel of that image
    for i in range(16):
        values = set(x[i].flatten().tolist()) | {0}
        assert set(out[i].flatten().tolist()) <= values
    z = normalize(torch.full((1, 3, 2, 2), 255, dtype=torch.uint8))
    assert torch.allclose(
        z[0, :, 0, 0], torch.tensor([(1 - 0.4914) / 0.2470, (1 - 0.4822) / 0.2435, (1 - 0.4465) / 0.2616])
    )


@needs_cifar10
def test_offline_copy_full_split() -> None:
    dm = CIFAR10DataModule(path=str(CIFAR10_NPZ))
    dm.setup("fit")
    assert len(dm.train_dataloader().dataset) == 45_000
    assert len(dm.test_dataloader().dataset) == 10_000
    assert len(dm.train_dataloader()) == 45_000 // 128  # training drops the last partial batch only


@needs_cifar10
def test_validation_is_a_stratified_split_of_the_training_set_not_the_test_set() -> None:
    dm = CIFAR10DataModule(path=str(CIFAR10_NPZ), val_size=1000, subset_seed=3)
    dm.setup("fit")
    assert dm.val_indices is not None
    val_x, val_y = dm.val_dataloader().dataset.tensors  # type: ignore[union-attr]
    train_x, _ = dm.train_dataloader().dataset.tensors  # type: ignore[attr-defined]
    assert len(val_y) == 1000 and np.bincount(val_y.numpy()).tolist() == [100] * 10
    assert len(train_x) == 49_000
    arrays = np.load(CIFAR10_NPZ)
    assert torch.equal(val_x, torch.from_numpy(arrays["x_train"][dm.val_indices]).permute(0, 3, 1, 2))
    # the held-out images are not trained on: training keeps every other image, in order
    kept = np.setdiff1d(np.arange(50_000), dm.val_indices)
    for i in (0, 1, 12_345, 48_999):
        assert torch.equal(train_x[i], torch.from_numpy(arrays["x_train"][kept[i]]).permute(2, 0, 1))
    # the same seed gives the same split
    again = CIFAR10DataModule(path=str(CIFAR10_NPZ), val_size=1000, subset_seed=3)
    again.setup("fit")
    assert np.array_equal(again.val_indices, dm.val_indices)  # type: ignore[arg-type]
    none = CIFAR10DataModule(path=str(CIFAR10_NPZ), val_size=0)
    none.setup("fit")
    assert none.val_dataloader() == [] and len(none.train_dataloader().dataset) == 50_000  # type: ignore[arg-type]


def test_a_missing_data_path_says_how_to_get_the_data() -> None:
    with pytest.raises(DataError, match=r"data.path is null.*DSE_CIFAR10_NPZ.*cifar10_torchvision"):
        CIFAR10DataModule(path=None).setup("test")  # type: ignore[arg-type]


def test_the_halves_do_not_depend_on_the_copy_s_order() -> None:
    """Official order (torchvision) and class-major order (the offline copy) cut into the same images."""
    rng = np.random.default_rng(0)
    official = rng.permutation(np.repeat(np.arange(10), 100))  # labels in some interleaved order
    image_id = np.arange(1000)  # an image's identity = its official position
    class_major = np.argsort(official, kind="stable")  # class by class, official order within a class
    for split in ("search", "held_out"):
        from_official = set(image_id[half_of_test_set(within_class_rank(official), split)])
        from_class_major = set(image_id[class_major][half_of_test_set(within_class_rank(official[class_major]), split)])
        assert from_official == from_class_major and len(from_official) == 500
    search = set(half_of_test_set(within_class_rank(official), "search"))
    assert not search & set(half_of_test_set(within_class_rank(official), "held_out"))


@needs_cifar10
def test_the_shipped_subset_lies_in_the_search_half_and_has_no_held_out_image() -> None:
    with np.load(resolve_asset("cifar10_test_subset")) as shipped, np.load(CIFAR10_NPZ) as full:
        ranks = within_class_rank(full["y_test"])
        assert np.array_equal(shipped["x_test"], full["x_test"][shipped["test_indices"]])
        assert np.array_equal(shipped["test_class_ranks"], ranks[shipped["test_indices"]])
        assert set(shipped["test_indices"]) <= set(half_of_test_set(ranks, "search"))
        assert np.array_equal(shipped["x_calibration"], full["x_train"][shipped["train_indices"]])
    held = CIFAR10DataModule(path=str(CIFAR10_NPZ), test_split="held_out")
    held.setup("test")
    assert held.test_indices is not None and len(held.test_indices) == 5000
    assert np.bincount(np.load(CIFAR10_NPZ)["y_test"][held.test_indices]).tolist() == [500] * 10
    assert not set(held.test_indices) & set(np.load(resolve_asset("cifar10_test_subset"))["test_indices"])
    with pytest.raises(DataError, match="no image of the 'held_out' half"):
        CIFAR10DataModule(path="cifar10_test_subset", test_split="held_out").setup("test")


def test_activation_ranges_are_calibrated_on_training_images() -> None:
    dm = CIFAR10DataModule(path="cifar10_test_subset", test_subset=100)
    evaluator = Evaluator(dm, timing_repeats=1, calibration_images=64, calibration_seed=5)
    batches = evaluator.calibration_batches()
    with np.load(resolve_asset("cifar10_test_subset")) as shipped:
        training = normalize(torch.from_numpy(shipped["x_calibration"]).permute(0, 3, 1, 2))
        tests = normalize(torch.from_numpy(shipped["x_test"]).permute(0, 3, 1, 2))
    picked = torch.cat(batches)
    assert len(picked) == 64
    # every calibration image is a training image, none a test image
    assert all(bool((training == x).flatten(1).all(1).any()) for x in picked)
    assert not any(bool((tests == x).flatten(1).all(1).any()) for x in picked)


@needs_cifar10
def test_the_full_file_keeps_a_bounded_seeded_pool_of_training_images_for_calibration() -> None:
    dm = CIFAR10DataModule(path=CIFAR10_NPZ, test_subset=100)
    dm.setup("test")
    again = CIFAR10DataModule(path=CIFAR10_NPZ, test_subset=100)
    again.setup("test")
    picked = dm.calibration_images(300, seed=3)
    assert picked is not None and picked.shape == (300, 3, 32, 32) and picked.dtype == torch.uint8
    assert torch.equal(picked, again.calibration_images(300, seed=3))  # the same pick on every setup
    assert dm._calibration_pool is not None and len(dm._calibration_pool) == CALIBRATION_POOL
    with np.load(CIFAR10_NPZ) as full:
        train = torch.from_numpy(full["x_train"]).permute(0, 3, 1, 2).flatten(1)
    rows = {bytes(r.numpy()) for r in train}
    assert all(bytes(x.flatten().numpy()) in rows for x in picked)  # training images, whole


@pytest.mark.parametrize(
    "overrides",
    [["data.test_split=all"], ["final_eval.data.test_split=search"], ["data.test_split=held_out"]],
)
def test_a_final_evaluation_that_could_share_images_with_the_search_is_refused(overrides: list[str]) -> None:
    check_held_out(compose_config(["study=quickstart", "final_eval.enabled=true"]))  # the defaults pass
    with pytest.raises(ConfigError, match=r"final_eval\.data\.test_split=held_out"):
        check_held_out(compose_config(["study=quickstart", "final_eval.enabled=true", *overrides]))
    check_held_out(compose_config(["study=quickstart", *overrides, "final_eval.enabled=false"]))


def _cifar10_archive(folder: Path, per_class_test: int = 10, per_class_train: int = 5) -> Path:
    """A small cifar-10-python.tar.gz in torchvision's layout (pickled batches), cut from the shipped subset."""
    import pickle
    import tarfile

    with np.load(resolve_asset("cifar10_test_subset")) as shipped:
        x, y = shipped["x_test"], shipped["y_test"]
    order = np.argsort(within_class_rank(y) * 10 + y, kind="stable")  # interleaved, as the official files
    test, train = order[: 10 * per_class_test], order[10 * per_class_test : 10 * (per_class_test + per_class_train)]
    batches = folder / "cifar-10-batches-py"
    batches.mkdir(parents=True)

    def dump(name: str, idx: np.ndarray) -> None:
        rows = x[idx].transpose(0, 3, 1, 2).reshape(len(idx), -1)  # CHW rows, as CIFAR-10's python batches
        (batches / name).write_bytes(pickle.dumps({"data": rows, "labels": y[idx].tolist()}))

    dump("test_batch", test)
    for i, part in enumerate(np.array_split(train, 5), start=1):
        dump(f"data_batch_{i}", part)
    (batches / "batches.meta").write_bytes(pickle.dumps({"label_names": [str(c) for c in range(10)]}))
    archive = folder / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(batches, arcname="cifar-10-batches-py")
    return archive


def test_the_final_evaluation_downloads_with_torchvision_when_asked(tmp_path, monkeypatch) -> None:
    """Evaluator runs the data module's prepare_data: with download=true torchvision's own download is
    called (its fetch pointed at a local archive, since there is no network here) and the held-out half loads."""
    import hashlib
    import shutil

    import torchvision.datasets.cifar as tv_cifar
    from torchvision.datasets.utils import extract_archive

    source = _cifar10_archive(tmp_path / "archive")
    md5 = {
        p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in (tmp_path / "archive/cifar-10-batches-py").iterdir()
    }
    monkeypatch.setattr(
        tv_cifar.CIFAR10, "train_list", [[f"data_batch_{i}", md5[f"data_batch_{i}"]] for i in range(1, 6)]
    )
    monkeypatch.setattr(tv_cifar.CIFAR10, "test_list", [["test_batch", md5["test_batch"]]])
    monkeypatch.setattr(tv_cifar.CIFAR10, "meta", {**tv_cifar.CIFAR10.meta, "md5": md5["batches.meta"]})
    fetched: list[str] = []

    def fetch(url: str, download_root: str, filename: str, md5: str) -> None:  # the network's part, from disk
        fetched.append(url)
        Path(download_root).mkdir(parents=True, exist_ok=True)
        shutil.copy(source, Path(download_root) / filename)
        extract_archive(str(Path(download_root) / filename), download_root)

    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", fetch)
    root = tmp_path / "cache"
    with pytest.raises(DataError, match="set download: true"):  # without download: not there, and says how
        Evaluator(CIFAR10DataModule(source="torchvision", path=str(root), test_split="held_out"), timing_repeats=1)
    evaluator = Evaluator(
        CIFAR10DataModule(source="torchvision", path=str(root), download=True, test_split="held_out"), timing_repeats=1
    )
    assert fetched == [tv_cifar.CIFAR10.url] and evaluator.n_images == 50  # odd within-class ranks: 5 per class
