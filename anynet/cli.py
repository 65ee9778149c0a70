"""The ``anynet`` command: ``devices``, ``train``, ``evaluate`` and, from a source checkout, ``bench``."""

from __future__ import annotations

import argparse
import importlib.util
import platform
import sys
from pathlib import Path
from types import ModuleType

from . import __version__
from ._libraries import unusable_devices
from .backend import available_devices, device, library_versions, to_numpy
from .chunking import chunk_bounds

__all__ = ["main", "build_parser"]


class UserError(Exception):
    """A mistake in the command line, reported in one line without a traceback."""


def _devices(args: argparse.Namespace) -> int:
    names = available_devices()
    print(f"anynet {__version__} on Python {platform.python_version()} ({platform.machine()})")
    print("libraries:")
    for module, version in library_versions().items():
        print(f"  {module:<18} {version}")
    print("devices usable here (pass one to --device or anynet.device()):")
    for name in names:
        print(f"  {name}")
    problems = unusable_devices()
    if problems:  # installed, yet not in the list above: say why, and how to fix it
        print("installed but not usable here:")
        for what, why in problems:
            print(f"  {what}: {why}")
    auto = device("auto")
    print(f"'auto' picks: {auto.name}")
    if auto.platform != "cuda":  # auto takes a CUDA GPU through CuPy whenever there is one
        print('no CUDA device through CuPy; on a CUDA machine: pip install "anynet[cuda12]" or "anynet[cuda13]"')
    return 0


def _pick_device(spec: str):
    where = device(spec)
    why = ""
    if spec == "auto":
        why = " (auto: a CUDA GPU through CuPy)" if where.platform == "cuda" else " (auto: no CUDA GPU through CuPy)"
    print(f"device: {where.name}{why}")
    return where


def _check_output_path(option: str, path: str | None) -> None:
    """Fail now, not after training, on an output file that cannot be written (a --plot also needs matplotlib)."""
    if path is None:
        return
    if not Path(path).expanduser().resolve().parent.is_dir():
        raise UserError(f"{option} {path}: the folder {Path(path).expanduser().resolve().parent} does not exist")
    if option == "--plot":
        from .plot import _pyplot

        _pyplot()


def _train(args: argparse.Namespace) -> int:
    from .datasets import load_dataset
    from .io import save_params
    from .networks import MultiLayerNet, TwoLayerNet
    from .trainer import Trainer

    # Everything that can fail is checked before the first step, so no training is lost to a typo.
    for option, path in (("--save", args.save), ("--plot", args.plot), ("--checkpoint", args.checkpoint)):
        _check_output_path(option, path)
    if args.resume is not None and not Path(args.resume).is_file():
        raise UserError(f"--resume {args.resume}: no such checkpoint file")
    if args.model == "two-layer" and len(args.hidden) != 1:
        raise UserError(f"--model two-layer takes one --hidden size, got {len(args.hidden)}: {args.hidden}")
    if args.epochs < 1 or args.batch_size < 1:
        raise UserError("--epochs and --batch-size must be at least 1")
    where = _pick_device(args.device)
    (x_train, t_train), (x_test, t_test) = load_dataset(args.dataset, root=args.data_dir)
    print(f"data: {args.dataset}, {x_train.shape[0]} training and {x_test.shape[0]} test images")
    network: TwoLayerNet | MultiLayerNet
    if args.model == "two-layer":
        network = TwoLayerNet(784, args.hidden[0], 10, activation=args.activation, device=where, seed=args.seed)
    else:
        init = args.weight_init or ("relu" if args.activation == "relu" else "sigmoid")
        network = MultiLayerNet(784, args.hidden, 10, activation=args.activation, weight_init_std=init,
                                weight_decay_lambda=args.weight_decay, device=where, seed=args.seed)
    print(f"model: {args.model} {'-'.join(str(n) for n in network.sizes)}, {args.activation}")
    optimizer_param = {} if args.lr is None else {"lr": args.lr}
    trainer = Trainer(network, x_train, t_train, x_test, t_test, epochs=args.epochs, mini_batch_size=args.batch_size,
                      optimizer=args.optimizer, optimizer_param=optimizer_param, seed=args.seed,
                      checkpoint=args.checkpoint, resume=args.resume)
    history = trainer.train()
    if args.save is not None:
        save_params(args.save, network.params,
                    metadata={"architecture": network.architecture(), "dataset": args.dataset,
                              "test_accuracy": history["final_test_accuracy"]})
        print(f"saved the weights to {args.save} (anynet evaluate --weights {args.save})")
    if args.plot is not None:
        from .plot import plot_training_curves

        plot_training_curves(history, args.plot)
        print(f"saved the training curves to {args.plot}")
    return 0


def _network_from_file(path: str, where):
    """The network a weights file holds: anynet's own .npz (with its architecture), or the book's sigmoid net."""
    from .io import load_params, read_metadata
    from .networks import MultiLayerNet

    params = load_params(path, device=where, dtype="float32")
    architecture = read_metadata(path).get("architecture")
    if architecture is None:  # the book's pickles: W1, b1, ..., sigmoid hidden layers, softmax output
        depth = sum(1 for name in params if name.startswith("W"))
        names = [f"{p}{i}" for i in range(1, depth + 1) for p in "Wb"]
        if depth == 0 or sorted(params) != sorted(names):
            raise UserError(f"{path}: holds {', '.join(sorted(params))}; expected W1, b1, ..., Wn, bn")
        sizes = [params["W1"].shape[0]] + [params[f"W{i}"].shape[1] for i in range(1, depth + 1)]
        architecture = {"sizes": sizes, "activation": "sigmoid"}
    sizes = architecture["sizes"]
    network = MultiLayerNet(sizes[0], sizes[1:-1], sizes[-1], activation=architecture["activation"], device=where)
    return network.load_params(params)


def _evaluate(args: argparse.Namespace) -> int:
    from .datasets import DATASETS, load_dataset
    from .metrics import confusion_matrix

    if not Path(args.weights).is_file():
        raise UserError(f"--weights {args.weights}: no such file")
    _check_output_path("--plot", args.plot)
    where = _pick_device(args.device)
    network = _network_from_file(args.weights, where)
    x, t = load_dataset(args.dataset, split="test", root=args.data_dir)
    if network.input_size != x.shape[1] or network.output_size != 10:
        raise UserError(f"{args.weights}: a {'-'.join(map(str, network.sizes))} network cannot classify "
                        f"{args.dataset} (784 inputs, 10 classes)")
    x, t = where.asarray(x), where.asarray(t)
    xp = where.xp
    scores = xp.concat([network.predict(x[start:stop, ...]) for start, stop in chunk_bounds(x.shape[0], 10000)])
    counts = to_numpy(confusion_matrix(t, scores, 10)).tolist()
    names = DATASETS[args.dataset].class_names
    correct = sum(counts[i][i] for i in range(10))
    total = sum(map(sum, counts))
    print(f"model: {'-'.join(map(str, network.sizes))} {network.activation}, from {args.weights}")
    print(f"accuracy: {correct / total:.4f} ({correct} of {total} {args.dataset} test images)")
    print("per-class accuracy:")
    width = max(len(name) for name in names)
    for i, name in enumerate(names):
        print(f"  {i}  {name:<{width}}  {counts[i][i] / max(sum(counts[i]), 1):.4f}  ({sum(counts[i])} images)")
    print("confusion matrix (rows: true class, columns: predicted class):")
    print("      " + "".join(f"{j:>6}" for j in range(10)))
    for i, row in enumerate(counts):
        print(f"  {i:>2}  " + "".join(f"{value:>6}" for value in row))
    if args.plot is not None:
        from .functions import softmax
        from .plot import plot_misclassified

        plot_misclassified(x, t, softmax(scores), args.plot, class_names=names)
        print(f"saved misclassified test images to {args.plot}")
    return 0


def build_parser(with_bench_options: bool = True) -> argparse.ArgumentParser:
    """The ``anynet`` command line; without ``with_bench_options`` the benchmark (a source-checkout module) is not
    loaded and ``bench`` is listed without its options."""
    parser = argparse.ArgumentParser(
        prog="anynet",
        description="The neural network of 'Deep Learning from Scratch' on NumPy, CuPy, PyTorch or array-api-strict.",
    )
    parser.add_argument("--version", action="version", version=f"anynet {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    devices = commands.add_parser("devices", help="list the devices usable on this machine, with library versions")
    devices.set_defaults(run=_devices)

    train = commands.add_parser("train", help="train a network on MNIST or Fashion-MNIST",
                                description="Train a network and report its accuracy after every epoch. The "
                                            "defaults (MLP 784-100-100-10, ReLU, Adam 1e-3, batch 100, 10 epochs) "
                                            "train in under a minute on a laptop CPU.")
    train.add_argument("--dataset", default="mnist", choices=["mnist", "fashion-mnist"])
    train.add_argument("--model", default="mlp", choices=["mlp", "two-layer"])
    train.add_argument("--hidden", type=int, nargs="+", default=[100, 100], metavar="N",
                       help="hidden layer sizes (default: 100 100; two-layer takes one)")
    train.add_argument("--activation", default="relu", choices=["relu", "sigmoid"])
    train.add_argument("--weight-init", default=None,
                       help="mlp weight scale: relu/he, sigmoid/xavier or a number (default: from --activation)")
    train.add_argument("--weight-decay", type=float, default=0.0, help="L2 weight decay lambda (mlp; default 0)")
    train.add_argument("--optimizer", default="adam",
                       choices=["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam"])
    train.add_argument("--lr", type=float, default=None, help="learning rate (default: the optimizer's; Adam 0.001)")
    train.add_argument("--epochs", type=int, default=10)
    train.add_argument("--batch-size", type=int, default=100)
    train.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N, torch:cuda, ...")
    train.add_argument("--seed", type=int, default=0, help="seeds the initial weights and batch order (default 0)")
    train.add_argument("--save", metavar="FILE.npz", help="save the trained weights (for anynet evaluate)")
    train.add_argument("--plot", metavar="FILE.png", help="save loss and accuracy curves (needs matplotlib)")
    train.add_argument("--checkpoint", metavar="FILE.npz", help="write a checkpoint after every epoch")
    train.add_argument("--resume", metavar="FILE.npz", help="continue from a checkpoint")
    train.add_argument("--data-dir", metavar="DIR", help="folder with the dataset's files (else the usual places)")
    train.set_defaults(run=_train)

    evaluate = commands.add_parser("evaluate", help="accuracy, per-class accuracy and confusion matrix of weights")
    evaluate.add_argument("--weights", required=True, metavar="FILE",
                          help="an .npz from anynet train --save, or the book's pickle (e.g. sample_weight.pkl)")
    evaluate.add_argument("--dataset", default="mnist", choices=["mnist", "fashion-mnist"])
    evaluate.add_argument("--device", default="auto")
    evaluate.add_argument("--data-dir", metavar="DIR")
    evaluate.add_argument("--plot", metavar="FILE.png", help="save a grid of misclassified test images")
    evaluate.set_defaults(run=_evaluate)

    bench = commands.add_parser("bench", help="time anynet against the book's NumPy code and PyTorch "
                                              "(from a source checkout)")
    benchmarks, why = _benchmarks() if with_bench_options else (None, "")
    if benchmarks is not None:
        bench.description = (benchmarks.__doc__ or "").split("\n\n")[0]
        benchmarks.add_arguments(bench)
        bench.set_defaults(run=benchmarks.run)
    else:  # an installed wheel: whatever the options, the one line that says where the benchmark is
        bench.set_defaults(run=_no_benchmarks, why=why)
    return parser


# The benchmark lives in the source tree beside the package (benchmarks/), not in the wheel.
CHECKOUT = Path(__file__).resolve().parent.parent
BENCHMARKS = CHECKOUT / "benchmarks"


def _benchmarks() -> tuple[ModuleType | None, str]:
    """The ``benchmarks`` package of the source checkout this anynet is imported from, or None and why not (a wheel
    install, or a checkout whose benchmark cannot be loaded)."""
    init = BENCHMARKS / "__init__.py"
    # a checkout has pyproject.toml beside benchmarks/; site-packages may hold another project's "benchmarks"
    if not init.is_file() or not (CHECKOUT / "pyproject.toml").is_file():
        return None, ""
    loaded = sys.modules.get("benchmarks")
    if loaded is not None and Path(getattr(loaded, "__file__", "") or "").resolve() == init:
        return loaded, ""
    try:
        module = _load_benchmarks(init)
    except Exception as error:
        return None, f" ({init} could not be loaded: {type(error).__name__}: {error})"
    if not all(hasattr(module, name) for name in ("add_arguments", "run")):
        return None, f" ({init} has no add_arguments/run)"
    return module, ""


def _load_benchmarks(init: Path) -> ModuleType:
    # by its path, so that neither the checkout's other folders nor another "benchmarks" on sys.path come in
    spec = importlib.util.spec_from_file_location("benchmarks", init, submodule_search_locations=[str(BENCHMARKS)])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["benchmarks"] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules["benchmarks"]
        raise
    return module


def _no_benchmarks(args: argparse.Namespace) -> int:
    raise UserError("the benchmark is not installed with the package: it needs a source checkout "
                    "(git clone the repository, pip install -e . there, then anynet bench or "
                    f"python scripts/benchmark.py){args.why}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(with_bench_options="bench" in argv)  # the benchmark is loaded only when asked for
    args, unknown = parser.parse_known_args(argv)
    if unknown and getattr(args, "run", None) is not _no_benchmarks:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return args.run(args)
    except BrokenPipeError:  # output piped into head and cut short
        return 0
    except KeyboardInterrupt:
        print(f"anynet {args.command}: interrupted", file=sys.stderr)
        return 130
    except (UserError, ValueError, TypeError, OSError, ImportError, FloatingPointError) as error:
        # the first line is the reason; dataset errors add where they looked and how to fix it
        print(f"anynet {args.command}: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
