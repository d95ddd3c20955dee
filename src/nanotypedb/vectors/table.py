"""TableVectors: one table's normalised float32 vectors in memory, in fixed-size blocks, with each row's slot.

Blocks rather than one growing matrix: growing adds a block instead of copying every row
(doubling one matrix of 100,000 x 384 held the event loop for 0.7 s, measured). A removal
moves the last row into the freed slot, so slots [0, size) are always the live rows.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from .store import IdArray, Matrix

Vector = npt.NDArray[np.float32]

# 12 MB per block at 384 dimensions: a new block is one small allocation, and a search makes
# one einsum call per block (13 at 100,000 rows), whose overhead is a few microseconds each.
BLOCK_ROWS = 8192
MIN_IDS = 16


def normalise_rows_in_place(matrix: Matrix) -> None:
    # einsum and an in-place division: no temporary the size of the matrix (150 MB at 100,000 x 384).
    norms = np.sqrt(np.einsum("ij,ij->i", matrix, matrix))
    norms[norms == 0] = 1
    matrix /= norms[:, None]


class TableVectors:
    """The rows of one table: `blocks` of BLOCK_ROWS rows, `ids[slot]`, and `slots[row_id]`."""

    def __init__(self, dims: int) -> None:
        self.dims = dims
        self.size = 0
        self.blocks: list[Matrix] = []
        self.ids: IdArray = np.zeros(MIN_IDS, dtype=np.int64)
        self.slots: dict[int, int] = {}

    @classmethod
    def from_arrays(cls, ids: IdArray, matrix: Matrix) -> TableVectors:
        """Built from `store.load_all`'s arrays, which it takes over (and normalises in place)."""
        table = cls(matrix.shape[1])
        normalise_rows_in_place(matrix)
        # Views of the loaded matrix, not copies; a short last block is replaced when it fills.
        table.blocks = [matrix[start : start + BLOCK_ROWS] for start in range(0, len(ids), BLOCK_ROWS)]
        table.ids, table.size = ids, len(ids)
        table.slots = dict(zip(ids.tolist(), range(len(ids)), strict=True))
        return table

    @property
    def capacity(self) -> int:
        return 0 if not self.blocks else (len(self.blocks) - 1) * BLOCK_ROWS + len(self.blocks[-1])

    def row(self, slot: int) -> Vector:
        """The matrix row of a slot (a view: copy it to keep it)."""
        row: Vector = self.blocks[slot // BLOCK_ROWS][slot % BLOCK_ROWS]
        return row

    def upsert(self, row_id: int, unit: Vector) -> None:
        slot = self.slots.get(row_id)
        if slot is None:
            slot = self._append(row_id)
        self.blocks[slot // BLOCK_ROWS][slot % BLOCK_ROWS] = unit

    def remove(self, row_id: int) -> bool:
        slot = self.slots.pop(row_id, None)
        if slot is None:
            return False
        last = self.size - 1
        if slot != last:
            moved = int(self.ids[last])
            self.blocks[slot // BLOCK_ROWS][slot % BLOCK_ROWS] = self.row(last)
            self.ids[slot] = moved
            self.slots[moved] = slot
        self.size = last
        return True

    def scores(self, unit: Vector) -> npt.NDArray[np.float32]:
        """Cosine similarity of every live row with a unit query: one matrix-vector product per block.

        `einsum`, not `@`: `@` goes to OpenBLAS, whose float32 matrix-vector product measured
        twice as slow on one thread on our machines, and whose thread pool stalled searches by
        about 8 ms whenever both cores were busy. einsum's loop runs on the calling thread alone.
        """
        out = np.empty(self.size, dtype=np.float32)
        for start in range(0, self.size, BLOCK_ROWS):
            end = min(start + BLOCK_ROWS, self.size)
            np.einsum("ij,j->i", self.blocks[start // BLOCK_ROWS][: end - start], unit, out=out[start:end])
        return out

    def _append(self, row_id: int) -> int:
        slot = self.size
        if slot == self.capacity:
            self._add_block()
        if slot == len(self.ids):
            # Ids still double: 8 bytes a row, so a copy of 100,000 of them is under a millisecond.
            self.ids = np.concatenate([self.ids, np.zeros(len(self.ids), dtype=np.int64)])
        self.ids[slot] = row_id
        self.slots[row_id] = slot
        self.size += 1
        return slot

    def _add_block(self) -> None:
        block = np.zeros((BLOCK_ROWS, self.dims), dtype=np.float32)
        if self.blocks and len(self.blocks[-1]) < BLOCK_ROWS:
            short = self.blocks.pop()  # the short end of a loaded matrix
            block[: len(short)] = short
        self.blocks.append(block)
