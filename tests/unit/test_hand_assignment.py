from __future__ import annotations

import numpy as np

from asl_ray.landmarks import assign_hands


def test_two_hands_go_to_the_nearest_pose_wrists() -> None:
    left_wrist, right_wrist = np.array([400.0, 300.0]), np.array([200.0, 300.0])
    hands = np.array([[210.0, 310.0], [390.0, 290.0]])
    # MediaPipe's labels are ignored when there is a pose.
    assert assign_hands(hands, ["Left", "Right"], left_wrist, right_wrist) == ["right", "left"]


def test_two_hands_never_share_a_side() -> None:
    left_wrist, right_wrist = np.array([400.0, 300.0]), np.array([200.0, 300.0])
    # Both hands nearer the left wrist: the pairing with the smaller total wins.
    hands = np.array([[380.0, 300.0], [330.0, 300.0]])
    assert sorted(assign_hands(hands, ["Left", "Left"], left_wrist, right_wrist)) == ["left", "right"]
    assert assign_hands(hands, ["Left", "Left"], left_wrist, right_wrist) == ["left", "right"]


def test_one_hand_and_crossed_hands() -> None:
    left_wrist, right_wrist = np.array([400.0, 300.0]), np.array([200.0, 300.0])
    assert assign_hands(np.array([[205.0, 300.0]]), ["Right"], left_wrist, right_wrist) == ["right"]
    crossed = np.array([[390.0, 300.0], [210.0, 300.0]])
    assert assign_hands(crossed, ["Left", "Right"], left_wrist, right_wrist) == ["left", "right"]


def test_without_pose_the_mirrored_label_is_flipped() -> None:
    hands = np.array([[100.0, 100.0], [300.0, 100.0]])
    assert assign_hands(hands, ["Left", "Right"], None, None) == ["right", "left"]
    nan = np.array([np.nan, np.nan])
    assert assign_hands(hands[:1], ["Right"], nan, nan) == ["left"]
