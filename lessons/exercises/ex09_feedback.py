"""Chapter 9 assignment: relevance feedback on a query vector (8 points).

Fill in each TODO, then grade your work:

    pytest tests/exercises/grade_ex09_feedback.py                     # everything, with your points
    pytest tests/exercises/grade_ex09_feedback.py -k kl_feedback      # one exercise

A function that still raises NotImplementedError fails with a message saying what to do. The grader
compares your functions with the library's and with hand computations; this file may not import
minirank. torch and numpy are allowed.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


def weighted_ranknet(scores: torch.Tensor, order: Sequence[int]) -> torch.Tensor:
    """Exercise 1 (3 points). The listwise teacher's loss of feedback (lesson 9.2, FIRST eq. 2): the
    retriever's ``scores`` ``(n,)`` of n passages and the reranker's ``order`` (indices, best first; the
    passage order[0] has rank 1). Over every pair i, j with r_i < r_j, log(1 + exp(s_j - s_i)) / (r_i + r_j),
    averaged over the n (n - 1) / 2 pairs (0 for one passage). Returns a 0-d tensor autograd can
    differentiate. Raise ValueError if order is not a permutation of range(n).
    """
    # TODO: your code here
    raise NotImplementedError


def kl_feedback(query_vector: np.ndarray, passage_vectors: np.ndarray, teacher_scores: Sequence[float],
                steps: int = 100, lr: float = 0.005) -> tuple[np.ndarray, list[float]]:
    """Exercise 2 (3 points). Pointwise feedback (lesson 9.2, FIRST §4.4): move the query vector ``(dim,)``
    so that the retriever's scores over the passages ``(n, dim)`` agree with the teacher's ``(n,)``.
    The retriever's scores are s = (c / 2) * passage_vectors @ q, with c fixed once from the starting
    vector q0: c = (max t - min t) / (max - min of passage_vectors @ q0), or 1 if either range is 0.
    Loss: KL(softmax(t) || softmax(s)). Take ``steps`` updates of torch.optim.Adam at ``lr`` with the
    query vector as the only parameter. Returns (the new vector as a float32 numpy array, the loss
    before each update as a list of floats).
    """
    # TODO: your code here
    raise NotImplementedError


def recall_at_k(query_vector: np.ndarray, passage_vectors: np.ndarray, relevant: Sequence[int], k: int) -> float:
    """Exercise 3 (2 points). Recall@k of a dense search (lessons 1 and 9.4): rank the passages ``(n, dim)``
    by their dot product with the query vector ``(dim,)``, highest first, and return the fraction of the
    ``relevant`` passages (indices) found in the top k. Raise ValueError if relevant is empty or k < 1.
    """
    # TODO: your code here
    raise NotImplementedError
