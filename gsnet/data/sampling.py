"""A resumable training stream: the same batches, with the same augmentations, whether a run was
interrupted and resumed or not, and whatever the number of data-loader workers.

Detectron2's training loader (TrainingSampler + worker-seeded augmentations + aspect-ratio
grouping) restarts its shuffled stream on resume and seeds augmentations per worker process, so
the data after a resume differ from those of an uninterrupted run. This loader keeps its
behaviour (an infinite stream of shuffled epochs; process r of W takes every W-th position;
batches of images of the same orientation) but makes every sample a function of the seed and
its position in the stream:

- position p of the global stream is image ``permutation(epoch p // N)[p % N]``, each epoch's
  permutation drawn from the seed and the epoch number (N images);
- process r takes the positions r, r + W, r + 2W, ...: its k-th "item" is position r + k * W;
- the augmentation of position p draws from python's ``random`` and NumPy's global generator
  (the two that Detectron2's augmentations use), both seeded from (seed, p) for that sample
  alone and restored afterwards;
- the items reach the main process in stream order (worker w of n maps items w, w + n, ...,
  and PyTorch's DataLoader returns them round-robin, in order), where they are grouped into
  batches by orientation (width > height or not), as Detectron2's AspectRatioGroupedDataset.

The state of a process (:meth:`ResumableTrainLoader.state_dict`) is the seed, how many items it
has taken, and the items still waiting in an orientation bucket after the last batch. Restoring
it before iterating (:meth:`ResumableTrainLoader.load_state_dict`) continues exactly after the
last batch.
"""

import contextlib
import itertools
import logging
import random
from collections import OrderedDict

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ..errors import ConfigError

logger = logging.getLogger(__name__)

__all__ = ["ResumableTrainLoader", "ShuffledStream", "seeded_augmentation"]

# Epoch permutations kept in memory by a ShuffledStream (the current one and the previous one,
# which may still hold items waiting in an orientation bucket).
_CACHED_EPOCHS = 2


class ShuffledStream:
    """Position -> dataset index for an infinite stream of shuffled epochs.

    Args:
        size (int): the number of images N.
        seed (int): a non-negative seed.
    """

    def __init__(self, size, seed):
        self.size = size
        self.seed = seed
        self._permutations = OrderedDict()

    def __getitem__(self, position):
        epoch, offset = divmod(position, self.size)
        if epoch not in self._permutations:
            rng = np.random.default_rng([self.seed, epoch])
            self._permutations[epoch] = rng.permutation(self.size)
            while len(self._permutations) > _CACHED_EPOCHS:
                self._permutations.popitem(last=False)
        return int(self._permutations[epoch][offset])


@contextlib.contextmanager
def seeded_augmentation(seed, position):
    """Seed python's ``random`` and NumPy's global generator from (seed, position) for the
    duration of the block, then restore their states."""
    saved = random.getstate(), np.random.get_state()
    python_seed, numpy_seed = np.random.SeedSequence([seed, position]).generate_state(2)
    random.seed(int(python_seed))
    np.random.seed(int(numpy_seed))
    try:
        yield
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])


class _MappedItems(IterableDataset):
    """(item number, mapped sample) of one process: the waiting items, then every item from
    ``first_new_item`` on; each DataLoader worker maps every n-th of them."""

    def __init__(self, dataset_dicts, mapper, *, waiting, first_new_item, seed, rank, world_size):
        self.dataset_dicts = dataset_dicts
        self.mapper = mapper
        self.waiting = waiting
        self.first_new_item = first_new_item
        self.seed = seed
        self.rank = rank
        self.world_size = world_size

    def __iter__(self):
        worker = get_worker_info()
        items = itertools.chain(self.waiting, itertools.count(self.first_new_item))
        if worker is not None:
            items = itertools.islice(items, worker.id, None, worker.num_workers)
        stream = ShuffledStream(len(self.dataset_dicts), self.seed)
        for item in items:
            position = self.rank + item * self.world_size
            with seeded_augmentation(self.seed, position):
                sample = self.mapper(self.dataset_dicts[stream[position]])
            yield item, sample


class ResumableTrainLoader:
    """An infinite iterable of training batches (lists of mapped samples) of one process.

    Args:
        dataset_dicts (list[dict]): the training records.
        mapper (callable): record -> sample dict with "width" and "height" (the file's size).
        batch_size (int): images per batch of this process.
        seed (int): a non-negative seed of the shuffle and the augmentations.
        num_workers (int): DataLoader worker processes (0: map in the main process).
        aspect_ratio_grouping (bool): batch images of the same orientation together.
        rank, world_size (int): this process and the number of training processes.
    """

    def __init__(
        self,
        dataset_dicts,
        mapper,
        *,
        batch_size,
        seed,
        num_workers=0,
        aspect_ratio_grouping=True,
        rank=0,
        world_size=1,
    ):
        if not dataset_dicts:
            raise ConfigError("The training set is empty.")
        self.dataset_dicts = dataset_dicts
        self.mapper = mapper
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.aspect_ratio_grouping = aspect_ratio_grouping
        self.rank = rank
        self.world_size = world_size
        self._check_seed(seed)
        self.seed = seed
        self._taken = 0  # items of this process's stream taken so far
        self._waiting = []  # items taken but not yet batched, in stream order
        self._iterating = False

    @staticmethod
    def _check_seed(seed):
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"The data seed must be a non-negative integer, got {seed!r}.")

    def state_dict(self):
        """Where this process's stream stands after the last batch it yielded."""
        return {
            "seed": self.seed,
            "world_size": self.world_size,
            "taken": self._taken,
            "waiting": list(self._waiting),
        }

    def load_state_dict(self, state):
        """Continue after the batch at which ``state`` was taken (before iterating)."""
        if self._iterating:
            raise RuntimeError("A ResumableTrainLoader cannot be repositioned while iterated.")
        if state["world_size"] != self.world_size:
            raise ValueError(
                f"The data state is of a run with {state['world_size']} processes, this run has "
                f"{self.world_size}; use restart() instead."
            )
        self._check_seed(state["seed"])
        self.seed = state["seed"]
        self._taken = state["taken"]
        self._waiting = list(state["waiting"])

    def restart(self, seed, completed_batches):
        """Continue as if ``completed_batches`` batches had been taken and nothing waited in an
        orientation bucket (exact without grouping leftovers; used when the number of processes
        changed)."""
        self.load_state_dict(
            {
                "seed": seed,
                "world_size": self.world_size,
                "taken": completed_batches * self.batch_size,
                "waiting": [],
            }
        )

    def __iter__(self):
        dataset = _MappedItems(
            self.dataset_dicts,
            self.mapper,
            waiting=list(self._waiting),
            first_new_item=self._taken,
            seed=self.seed,
            rank=self.rank,
            world_size=self.world_size,
        )
        # An explicit generator: creating the iterator draws the workers' base seed from it,
        # not from the global torch generator (whose state checkpoints restore).
        generator = torch.Generator().manual_seed(self.seed)
        loader = DataLoader(
            dataset, batch_size=None, num_workers=self.num_workers, generator=generator
        )
        buckets = {}
        self._iterating = True
        try:
            for item, sample in loader:
                self._taken = max(self._taken, item + 1)
                key = sample["width"] > sample["height"] if self.aspect_ratio_grouping else None
                bucket = buckets.setdefault(key, [])
                bucket.append((item, sample))
                batch = None
                if len(bucket) == self.batch_size:
                    batch = [sample for _, sample in bucket]
                    bucket.clear()
                # The state after this batch: what a checkpoint taken now must restore.
                self._waiting = sorted(i for b in buckets.values() for i, _ in b)
                if batch is not None:
                    yield batch
        finally:
            self._iterating = False
