from .loading import Examples, TaskDataset, load_dataset

__all__ = ["Examples", "TaskDataset", "load_dataset"]
