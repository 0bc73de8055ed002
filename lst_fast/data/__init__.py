"""The data sets lst_fast reads: Fashion-MNIST (fashion_mnist: the test set, or the shipped 100-image
sample), CIFAR-10 (binary version), an ImageNet-style image folder and a safetensors file of images, all
opened by name through `sources.open_image_set` (the evaluation's `--data`)."""

from lst_fast.data.fashion_mnist import CLASSES, load_fashion_mnist, load_sample

__all__ = ["CLASSES", "load_fashion_mnist", "load_sample"]
