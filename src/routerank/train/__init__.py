"""Training: fine-tune rerankers and domain experts on a dataset's train split. Modules import torch lazily."""
