"""Accuracy, macro-F1 and the confusion matrix against hand-computed values."""
import numpy as np
import pytest

from mambadiff.metrics.classification import (accuracy, classification_metrics, confusion_matrix, macro_f1,
                                              per_class_scores)

Y_TRUE = [0, 0, 0, 1, 1, 2]
Y_PRED = [0, 0, 1, 1, 2, 2]


def test_hand_computed():
    assert accuracy(Y_TRUE, Y_PRED) == pytest.approx(4 / 6)
    m, labels = confusion_matrix(Y_TRUE, Y_PRED)
    assert labels == [0, 1, 2]
    np.testing.assert_array_equal(m, [[2, 1, 0], [0, 1, 1], [0, 0, 1]])
    # class 0: p 2/2 r 2/3 f 0.8; class 1: p 1/2 r 1/2 f 0.5; class 2: p 1/2 r 1 f 2/3
    per = per_class_scores(Y_TRUE, Y_PRED)
    assert per["f1"] == pytest.approx([0.8, 0.5, 2 / 3])
    assert per["support"] == [3, 2, 1]
    assert macro_f1(Y_TRUE, Y_PRED) == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)


def test_labels_absent_from_data_count_as_zero_f1_and_strings_work():
    assert macro_f1(["a", "a"], ["a", "a"], labels=["a", "b"]) == pytest.approx(0.5)
    res = classification_metrics(["neg", "pos", "pos"], ["neg", "neg", "pos"])
    assert res["labels"] == ["neg", "pos"] and res["confusion_matrix"] == [[1, 0], [1, 1]]
    assert res["macro_f1"] == pytest.approx((2 / 3 + 2 / 3) / 2)


def test_bad_input():
    with pytest.raises(ValueError, match="y_pred"):
        accuracy([0, 1], [0])
    with pytest.raises(ValueError, match="not in labels"):
        confusion_matrix([0, 3], [0, 1], labels=[0, 1])
    with pytest.raises(ValueError, match="1-D"):
        accuracy([[0, 1]], [[0, 1]])
