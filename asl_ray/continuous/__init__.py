"""Continuous recognition: sentences joined from isolated clips, CTC decoding
of several glosses (greedy and beam, with frame spans) and word error rate."""
