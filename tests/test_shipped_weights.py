"""The checkpoints that ship with dse are the trained models their model card describes."""

import pytest

from dse.candidates.evaluation import Evaluator
from dse.training.cifar10 import CIFAR10DataModule
from dse.training.models import get_model
from dse.training.time_series import TimeSeriesDataModule
from dse.training.weights import list_weights, load_weights


@pytest.mark.parametrize(
    ("name", "builder", "card_accuracy"),
    [
        ("mobilenet_v2_cifar10", "mobilenet_v2_cifar", 0.8675),
        ("tiny_cnn_cifar10", "tiny_cnn", 0.7195),
    ],
)
def test_shipped_checkpoint_reproduces_its_model_card(name: str, builder: str, card_accuracy: float) -> None:
    """Top-1 on the shipped 2,000-image subset, as stated in training/assets/MODEL_CARD.md."""
    assert name in list_weights()
    model = load_weights(get_model(builder), name)
    evaluator = Evaluator(CIFAR10DataModule(path="cifar10_test_subset"), timing_repeats=1)
    assert evaluator.accuracy(model).acc_top1 == pytest.approx(card_accuracy, abs=0.0015)  # 3 images of 2,000


def test_shipped_gru_reproduces_its_model_card() -> None:
    """98.92% top-1 (366 of 370) on JapaneseVowels' test set, through the evaluator every search uses."""
    assert "gru_japanese_vowels" in list_weights()
    model = load_weights(get_model("gru_classifier"), "gru_japanese_vowels")
    evaluator = Evaluator(TimeSeriesDataModule(test_split="all"), timing_repeats=1)
    result = evaluator.accuracy(model)
    assert (result.n_images, round(result.acc_top1 * result.n_images)) == (370, 366)
