#!/usr/bin/env python3
"""The book's chapter 8 (misclassified_mnist.py, train_deepnet.py): DeepConvNet with the book's trained weights.

    python scripts/ch8_deep_convnet.py --device auto --plot misclassified.png

DeepConvNet ((conv 3x3 - ReLU - conv 3x3 - ReLU - 2x2 max pooling) x 3 with 16, 16, 32, 32, 64, 64 filters - Affine
50 - ReLU - Dropout 0.5 - Affine 10 - Dropout 0.5) loads the book's trained weights, deep_convnet_params.pkl (--weights
FILE, else the one in book/ under --data-dir or $ANYNET_DATA, else the one in the current folder, where the book's
script reads it), predicts the MNIST test images 100 at a time at test time, and prints the test accuracy and, as the
book does, {view index: (label, inference)} of the first 20 misclassified images; --plot draws those 20 images (the
book's figure, with the probability of each wrong guess). --test-size scores only the first N test images (the
book's sampled = 1000).

--train trains a new DeepConvNet instead (the book's train_deepnet.py: Adam lr 0.001, batches of 100, 20 epochs,
1000 images of each set scored per epoch, He initial weights and dropout masks from --seed), --save writes it, and
the trained network is then tested the same way. That is slow on a CPU (about 0.2 s a step of 100 images on two
cores: 20 epochs of 60000 images take over 40 minutes); --epochs and --train-size shorten it.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import _ch6
import _ch7 as ch7

import anynet
from anynet.chunking import chunk_bounds
from anynet.functions import softmax
from anynet.networks import DeepConvNet
from anynet.plot import plot_misclassified

BOOK_WEIGHTS = "deep_convnet_params.pkl"
SHOWN = 20  # the book's max_view: misclassified images printed and drawn
BATCH = 100  # the book's test batch


def find_weights(given: str | None, data_dir: str | None) -> Path:
    """--weights, else the book's deep_convnet_params.pkl in book/ of --data-dir or $ANYNET_DATA, else here."""
    if given is not None:
        path = Path(given).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"--weights {given}: no such file")
        return path
    folders = [Path(folder).expanduser() / "book" for folder in (data_dir, os.environ.get("ANYNET_DATA")) if folder]
    candidates = [folder / BOOK_WEIGHTS for folder in folders] + [Path(BOOK_WEIGHTS)]
    for path in candidates:
        if path.is_file():
            return path
    looked = ", ".join(str(path) if path.is_absolute() else f"./{path}" for path in candidates)
    raise FileNotFoundError(f"the book's {BOOK_WEIGHTS} was not found (looked for {looked}): take it from the book's "
                            "repository (ch08/) and pass --weights FILE, or put it in $ANYNET_DATA/book/; or train a "
                            "network with --train")


def test_network(network, where, x_test, t_test) -> dict:
    """The book's test loop: predict ``BATCH`` images at a time at test time (dropout scaling, no masks), compare
    the guesses with the labels; the scores stay on the device and are read once."""
    xp = where.xp
    with where.active():  # CuPy's concat: on the network's GPU
        x, t = where.asarray(x_test), where.asarray(t_test)
        scores = xp.concat([network.predict(x[start:stop, ...], train_flg=False)
                            for start, stop in chunk_bounds(x.shape[0], BATCH)])
        guesses = xp.argmax(scores, axis=1)
        correct = int(anynet.to_numpy(xp.sum(xp.astype(guesses == t, xp.int64))))
    return {"scores": scores, "guesses": anynet.to_numpy(guesses), "correct": correct,
            "test_accuracy": correct / x.shape[0]}


def run(argv: list[str] | None = None) -> dict:
    parser = ch7.make_parser(__doc__)
    parser.add_argument("--weights", default=None,
                        help=f"trained parameters to test (default: the book's {BOOK_WEIGHTS}, see above)")
    parser.add_argument("--test-size", type=_ch6.positive, default=None,
                        help="score only the first N test images (default: all; the book's sampled = 1000)")
    parser.add_argument("--train", action="store_true",
                        help="train a DeepConvNet (slow on a CPU) instead of loading one")
    ch7.add_training_options(parser)
    args = parser.parse_args(argv)
    if not args.train:
        given = [f"--{name.replace('_', '-')}" for name in ch7.TRAINING_OPTIONS
                 if getattr(args, name) != parser.get_default(name)]
        if given:
            parser.error(f"{', '.join(given)} go{'es' if len(given) == 1 else ''} with --train")
    elif args.weights is not None:
        parser.error("--weights loads a trained network, --train trains a new one: give one of them")
    _ch6.check_plot(args.plot)
    ch7.check_save(args.save)
    where = anynet.device(args.device)  # a bad device is said before the data is read
    weights = None if args.train else find_weights(args.weights, args.data_dir)
    if args.train:
        (x_train, t_train), (x_test, t_test) = ch7.load_images(args.dataset, args.data_dir)
        x_train, t_train = ch7.first(x_train, t_train, args.train_size, "--train-size", args.dataset, "training")
    else:
        x_test, t_test = ch7.load_images(args.dataset, args.data_dir, split="test")
    x_test, t_test = ch7.first(x_test, t_test, args.test_size, "--test-size", args.dataset, "test")

    network = DeepConvNet(device=where, seed=args.seed)
    results: dict = {"network": network}
    if args.train:
        print(f"device: {where.name}; {args.dataset}: {x_train.shape[0]} training and {x_test.shape[0]} test images; "
              f"seed {args.seed}")
        if where.platform == "cpu":
            print(f"warning: DeepConvNet trains slowly on a CPU (about 0.2 s a step of 100 images on two cores): "
                  f"{args.epochs} epoch{'s' if args.epochs != 1 else ''} of {x_train.shape[0]} images is "
                  f"{args.epochs * max(x_train.shape[0] // args.batch_size, 1)} steps", file=sys.stderr)
        results.update(ch7.train(network, where, args, x_train, t_train, x_test, t_test).history())
    else:
        network.load_params(weights)
        print(f"device: {where.name}; DeepConvNet with {weights}; {args.dataset}: {x_test.shape[0]} test images")

    print("calculating test accuracy ... ")
    started = time.perf_counter()
    tested = test_network(network, where, x_test, t_test)
    seconds = time.perf_counter() - started
    print(f"test accuracy: {tested['test_accuracy']:.4f} ({tested['correct']} of {x_test.shape[0]}) in {seconds:.1f} s")

    labels = anynet.to_numpy(t_test)
    wrong = (tested["guesses"] != labels).nonzero()[0][:SHOWN]
    mis_pairs = {view: (int(labels[i]), int(tested["guesses"][i])) for view, i in enumerate(wrong.tolist(), 1)}
    print("======= misclassified result =======")
    print("{view index: (label, inference), ...}")
    print(mis_pairs)
    results.update(tested, seconds=seconds, mis_pairs=mis_pairs, weights=weights)
    if args.plot:
        with where.active():
            probabilities = softmax(tested["scores"])
        results["figure"] = plot_misclassified(x_test, labels, probabilities, Path(args.plot).expanduser(),
                                               count=SHOWN, class_names=ch7.class_names(args.dataset))
        print(f"figure: {args.plot}")
    return results


def main(argv: list[str] | None = None) -> int:
    return _ch6.run_main(run, argv)


if __name__ == "__main__":
    sys.exit(main())
