"""Data sets lst_fast reads: Fashion-MNIST (fashion_mnist), the evaluation's image sets by name (sources:
Fashion-MNIST, CIFAR-10, image folders, ImageNet val, tensor files; imagenet), and the resize and crop
of image files (preprocessing)."""
from lst_fast.data.fashion_mnist import CLASSES, load_fashion_mnist, load_sample

__all__ = ["CLASSES", "load_fashion_mnist", "load_sample"]
