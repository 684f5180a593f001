"""Unigram language-model segmentation (SentencePiece's algorithm) as Hugging Face ``tokenizers`` runs it.

Viterbi over the characters of one word: each vocabulary piece scores its log-probability; a character
no piece starts with becomes ``unk`` scoring the lowest piece score minus 10; the best total wins, and
on a tie the first path found stays (pieces are tried by start, then by increasing length). Runs of
``unk`` fuse into one. Mirrors tokenizers' models/unigram/model.rs ``encode_optimized``, itself a port of
sentencepiece's unigram_model.cc.
"""
from __future__ import annotations

from typing import Sequence

UNK_PENALTY = 10.0


class UnigramModel:
    def __init__(self, pieces: Sequence[tuple[str, float]], unk_id: int):
        if not 0 <= unk_id < len(pieces):
            raise ValueError(f"unk_id={unk_id} is outside the {len(pieces)}-piece vocabulary")
        self.ids = {piece: index for index, (piece, _) in enumerate(pieces)}   # a repeated piece: last id
        self.scores = [float(score) for _, score in pieces]
        self.unk_id = unk_id
        self.unk_score = min(self.scores) - UNK_PENALTY
        self.longest = max(len(piece) for piece, _ in pieces)

    def encode(self, word: str) -> list[int]:
        """Ids of the best segmentation of ``word``."""
        n = len(word)
        best_score = [0.0] * (n + 1)
        best_start: list[int | None] = [None] * (n + 1)
        best_id = [0] * (n + 1)

        def offer(start: int, end: int, piece_id: int, score: float) -> None:
            total = best_score[start] + score
            if best_start[end] is None or total > best_score[end]:
                best_score[end], best_start[end], best_id[end] = total, start, piece_id

        for start in range(n):
            has_single_char_piece = False
            for end in range(start + 1, min(n, start + self.longest) + 1):
                piece_id = self.ids.get(word[start:end])
                if piece_id is not None:
                    offer(start, end, piece_id, self.scores[piece_id])
                    has_single_char_piece = has_single_char_piece or end == start + 1
            if not has_single_char_piece:
                offer(start, start + 1, self.unk_id, self.unk_score)
        return self._backtrack(word, best_start, best_id)

    def _backtrack(self, word: str, best_start: list[int | None], best_id: list[int]) -> list[int]:
        path: list[int] = []
        end = len(word)
        while end > 0:
            path.append(best_id[end])
            start = best_start[end]
            assert start is not None, "every position is reachable through unk"
            end = start
        path.reverse()
        # fused unk text is looked up again by tokenizers and is never a piece, so it stays unk
        return [i for k, i in enumerate(path) if not (i == self.unk_id and k and path[k - 1] == self.unk_id)]
