"""Data sets lst_fast reads (Fashion-MNIST now; more to come with the evaluation CLI)."""
from lst_fast.data.fashion_mnist import CLASSES, load_fashion_mnist, load_sample

__all__ = ["CLASSES", "load_fashion_mnist", "load_sample"]
