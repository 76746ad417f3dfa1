"""Batch assembly: padding (or packing), media stacking, and the bad samples of the micro-batch.

Keys: ``input_ids``, ``labels``, ``attention_mask`` (1 = token, 0 = padding), ``ids``;
``position_ids`` when packing; ``pixel_values`` [N, 3, S, S] (image tiles and video frames in the
order of their placeholder blocks, row-major); ``audio_features`` [A, T_max, n_mels] zero-padded
with ``audio_lengths`` [A]; spoken answers: ``speech_codes`` [S, F_max, K] zero-padded, ``speech_code_lengths``
[S] and ``speech_spans`` [S, 3] = (row, start, end) of each answer's text tokens in the batch (packing moves
them with their sample). An absent modality (or no spoken answer) is an absent key. ``skipped`` lists
``(id, kind, message)`` of items that failed to load; they are dropped, never replaced.
"""

from __future__ import annotations

import torch

from vita.data.packing import pack_rows, position_ids_for
from vita.model.omni import IGNORE_INDEX


class Collator:
    def __init__(self, pad_id: int, packing: bool = False, max_length: int = 0) -> None:
        self.pad_id, self.packing, self.max_length = pad_id, packing, max_length

    def rows(self, items: list[dict]) -> list[list[int]]:
        if not self.packing:
            return [[i] for i in range(len(items))]
        return pack_rows([len(it["input_ids"]) for it in items], self.max_length)

    def __call__(self, items: list[dict]) -> dict:
        skipped = [(it["id"], *it["bad"]) for it in items if "bad" in it]
        items = [it for it in items if "bad" not in it]
        if not items:  # every sample failed: one pad token with no label keeps the step's shape
            items = [{"id": None, "input_ids": [self.pad_id], "labels": [IGNORE_INDEX]}]
        rows = self.rows(items)
        lens = [sum(len(items[i]["input_ids"]) for i in row) for row in rows]
        n = max(lens)
        ids = torch.full((len(rows), n), self.pad_id, dtype=torch.long)
        labels = torch.full((len(rows), n), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(rows), n), dtype=torch.long)
        pos = torch.zeros((len(rows), n), dtype=torch.long)
        order, spans = [], []
        for r, row in enumerate(rows):
            k = 0
            for i in row:
                it = items[i]
                m = len(it["input_ids"])
                ids[r, k:k + m] = torch.tensor(it["input_ids"])
                labels[r, k:k + m] = torch.tensor(it["labels"])
                if self.packing:
                    labels[r, k] = IGNORE_INDEX
                spans.extend((r, k + a, k + b) for a, b in it.get("speech_spans", []))
                k += m
                order.append(i)
            mask[r, :k] = 1
            if self.packing:
                pos[r] = torch.tensor(position_ids_for([len(items[i]["input_ids"]) for i in row], n))
        out = {"input_ids": ids, "labels": labels, "attention_mask": mask,
               "ids": [items[i]["id"] for i in order if items[i]["id"] is not None]}
        if self.packing:
            out["position_ids"] = pos
        pix = [items[i]["pixel_values"] for i in order if "pixel_values" in items[i]]
        if pix:
            out["pixel_values"] = torch.cat(pix)
        aud = [a for i in order for a in items[i].get("audio_features", [])]
        if aud:
            t = max(a.shape[0] for a in aud)
            feats = torch.zeros(len(aud), t, aud[0].shape[1])
            for j, a in enumerate(aud):
                feats[j, :a.shape[0]] = a
            out["audio_features"] = feats
            out["audio_lengths"] = torch.tensor([a.shape[0] for a in aud], dtype=torch.long)
        codes = [c for i in order for c in items[i].get("speech_codes", [])]
        if codes:
            if len(codes) != len(spans):
                raise ValueError(f"collate: {len(codes)} spoken answers' codes but {len(spans)} spans")
            f = max(c.shape[0] for c in codes)
            out["speech_codes"] = torch.zeros(len(codes), f, codes[0].shape[1], dtype=torch.long)
            for j, c in enumerate(codes):
                out["speech_codes"][j, :c.shape[0]] = c
            out["speech_code_lengths"] = torch.tensor([c.shape[0] for c in codes], dtype=torch.long)
            out["speech_spans"] = torch.tensor(spans, dtype=torch.long).reshape(-1, 3)
        if skipped:
            out["skipped"] = skipped
        return out
