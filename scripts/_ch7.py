"""What the chapter-7 and chapter-8 walkthroughs share: their options, the book's Trainer settings for the
convolutional networks, and the images as the book's ``load_mnist(flatten=False)`` gives them."""

from __future__ import annotations

import argparse
from pathlib import Path

import _ch6

from anynet.datasets import DATASETS, load_dataset
from anynet.trainer import Trainer

# mnist-test: MNIST's test images before this index train, those from it on test
HELD_OUT = 5000
DATASET_CHOICES = ("mnist", "fashion-mnist", "mnist-test")


def make_parser(doc: str) -> argparse.ArgumentParser:
    """The chapter-6 options (--device, --data-dir, --seed, --plot) with mnist-test among the datasets."""
    return _ch6.make_parser(doc, DATASET_CHOICES,
                            "mnist (default, as the book), fashion-mnist, or mnist-test (MNIST's test split: "
                            f"images 0-{HELD_OUT - 1} train, {HELD_OUT}-9999 test)")


def add_training_options(parser: argparse.ArgumentParser) -> None:
    """The book's Trainer settings for its convolutional networks (20 epochs, Adam 0.001, batches of 100, the
    accuracies of each epoch on 1000 images), with --train-size and --epochs to make a run shorter."""
    parser.add_argument("--epochs", type=_ch6.positive, default=20, help="epochs (the book: 20)")
    parser.add_argument("--train-size", type=_ch6.positive, default=None,
                        help="train on the first N training images (default: all; the book suggests 5000)")
    parser.add_argument("--batch-size", type=_ch6.positive, default=100, help="images per step (the book: 100)")
    parser.add_argument("--lr", type=float, default=0.001, help="Adam's learning rate (the book: 0.001)")
    parser.add_argument("--evaluate-size", type=_ch6.positive, default=1000,
                        help="images of each set scored after each epoch (the book: 1000)")
    parser.add_argument("--save", metavar="FILE", default=None,
                        help="write the trained parameters to FILE (an .npz with the architecture, whatever the name)")


TRAINING_OPTIONS = ("epochs", "train_size", "batch_size", "lr", "evaluate_size", "save")


def check_save(path: str | None) -> None:
    """Refuse an unusable --save before training rather than after it."""
    if path is None:
        return
    target = Path(path).expanduser()
    if target.is_dir():
        raise ValueError(f"--save {path} is a folder: name the file to write, e.g. {target / 'params.npz'}")
    if not target.parent.is_dir():
        raise ValueError(f"--save {path}: the folder {target.parent} does not exist")


def load_images(dataset: str, data_dir: str | None, split: str | None = None):
    """The dataset's images as the book's ``load_mnist(flatten=False)`` gives them, on the host: (N, 1, 28, 28)
    float32 in [0, 1], labels as class numbers. ``((x_train, t_train), (x_test, t_test))``, or ``(x_test, t_test)``
    when ``split`` is "test" (the training files are then not needed)."""
    if dataset == "mnist-test":
        x, t = load_dataset("mnist", normalize=True, flatten=False, one_hot_label=False, split="test",
                            data_dir=data_dir)
        test = (x[HELD_OUT:], t[HELD_OUT:])
        return test if split == "test" else ((x[:HELD_OUT], t[:HELD_OUT]), test)
    return load_dataset(dataset, normalize=True, flatten=False, one_hot_label=False, split=split, data_dir=data_dir)


def class_names(dataset: str) -> tuple[str, ...]:
    return DATASETS["mnist" if dataset == "mnist-test" else dataset].class_names


def first(x, t, size: int | None, option: str, dataset: str, what: str):
    """The first ``size`` images of (x, t) (the book's ``x_train[:5000]``), refusing more than there are."""
    if size is None:
        return x, t
    if size > x.shape[0]:
        raise ValueError(f"{option} {size}: {dataset} has {x.shape[0]} {what} images")
    return x[:size], t[:size]


def train(network, where, args: argparse.Namespace, x_train, t_train, x_test, t_test) -> Trainer:
    """The book's ``Trainer(network, ..., epochs=20, mini_batch_size=100, optimizer='Adam',
    optimizer_param={'lr': 0.001}, evaluate_sample_num_per_epoch=1000).train()``, on ``where``."""
    trainer = Trainer(network, x_train, t_train, x_test, t_test, epochs=args.epochs,
                      mini_batch_size=args.batch_size, optimizer="Adam", optimizer_param={"lr": args.lr},
                      evaluate_sample_num_per_epoch=args.evaluate_size, verbose=True,
                      device=where, seed=args.seed, sampling="replacement")
    trainer.train()
    if args.save:
        network.save_params(args.save)
        print(f"saved the network's parameters: {args.save}")
    return trainer
