"""The ``anynet`` command: ``devices``, ``train``, ``evaluate`` and, from a source checkout, ``bench``."""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import sys
import tempfile
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


# What `anynet train` loads its data with (load_dataset's options), recorded beside the weights it saves so that
# `anynet evaluate` prepares the test images the same way: rows of 784 pixels for the fully connected models, images
# (N, 1, 28, 28) for the convolutional ones (CONV_PREPROCESSING).
PREPROCESSING = {"normalize": True, "flatten": True, "one_hot_label": False}
CONV_PREPROCESSING = {**PREPROCESSING, "flatten": False}

# The convolutional models: the book's classes, and their one fully connected hidden layer's default size.
CONV_MODELS = {"cnn": "SimpleConvNet", "deep-cnn": "DeepConvNet"}
CONV_HIDDEN = {"cnn": 100, "deep-cnn": 50}
# The samples of each set a convolutional model's per-epoch accuracies are measured on (the book's chapters 7 and 8
# set evaluate_sample_num_per_epoch=1000): scoring all 60000 training images would take longer than the epoch.
CONV_EVALUATED = 1000


def _path(value: str | None) -> str | None:
    """A path option with ~ expanded (``--save=~/m.npz`` reaches us unexpanded: the shell expands only a word's
    start)."""
    return None if value is None else os.path.expanduser(value)


def _check_output_path(option: str, path: str | None) -> None:
    """Fail now, not after training, on an output file that cannot be written (a --plot also needs matplotlib)."""
    if path is None:
        return
    target = Path(path)
    if target.is_dir():
        raise UserError(f"{option} {path}: is a folder; name a file in it, e.g. {target / _EXAMPLE_NAMES[option]}")
    folder = target.resolve().parent
    if not folder.exists():
        raise UserError(f"{option} {path}: the folder {folder} does not exist")
    if not folder.is_dir():
        raise UserError(f"{option} {path}: {folder} is not a folder")
    try:  # the one sure test that the folder takes a new file: make one (as the atomic write will) and remove it
        handle, probe = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.", suffix=".probe")
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise UserError(f"{option} {path}: cannot write in the folder {folder} ({_reason(error)}); "
                        "choose a writable folder") from None
    if option == "--plot":
        from .plot import _pyplot

        _pyplot()


_EXAMPLE_NAMES = {"--save": "model.npz", "--plot": "plot.png", "--checkpoint": "checkpoint.npz"}


def _reason(error: OSError) -> str:
    """An OSError's reason without the file it names (a hidden temporary file, when the write was atomic)."""
    return error.strerror or str(error) or type(error).__name__


def _check_data_dir(path: str | None) -> None:
    if path is not None and not Path(path).is_dir():
        raise UserError(f"--data-dir {path}: no such folder (expected the folder that holds mnist/ and "
                        "fashion-mnist/, as ANYNET_DATA does)")


def _check_distinct(paths: dict[str, str | None]) -> None:
    """Two options naming one file would overwrite each other."""
    seen: dict[Path, str] = {}
    for option, path in paths.items():
        if path is None:
            continue
        key = Path(path).resolve()
        if key in seen:
            raise UserError(f"{seen[key]} and {option} name the same file {path}; give each its own file")
        seen[key] = option


def _train(args: argparse.Namespace) -> int:
    from .datasets import load_dataset
    from .io import save_params
    from .trainer import Trainer

    # Everything that can fail is checked before the first step, so no training is lost to a typo.
    save, plot, checkpoint = _path(args.save), _path(args.plot), _path(args.checkpoint)
    resume, data_dir = _path(args.resume), _path(args.data_dir)
    for option, path in (("--save", save), ("--plot", plot), ("--checkpoint", checkpoint)):
        _check_output_path(option, path)
    # --checkpoint may be the --resume file (the run goes on writing it); --save may not overwrite it
    _check_distinct({"--save": save, "--plot": plot, "--checkpoint": checkpoint})
    _check_distinct({"--resume": resume, "--save": save})
    if resume is not None and not Path(resume).is_file():
        raise UserError(f"--resume {args.resume}: no such checkpoint file")
    _check_data_dir(data_dir)
    conv = args.model in CONV_MODELS
    if conv:
        _check_conv_options(args)
    elif args.model == "two-layer" and args.hidden is not None and len(args.hidden) != 1:
        raise UserError(f"--model two-layer takes one --hidden size, got {len(args.hidden)}: {args.hidden}")
    _check_extend_options(args)
    if args.epochs < 1 or args.batch_size < 1:
        raise UserError("--epochs and --batch-size must be at least 1")
    for option, value in (("--evaluate-samples", args.evaluate_samples), ("--train-size", args.train_size)):
        if value is not None and value < 1:
            raise UserError(f"{option} {value}: expected at least 1")
    _check_hyperparameters(args)
    where = _pick_device(args.device)
    preprocessing = CONV_PREPROCESSING if conv else PREPROCESSING
    (x_train, t_train), (x_test, t_test) = load_dataset(args.dataset, preprocessing["normalize"],
                                                        preprocessing["flatten"], preprocessing["one_hot_label"],
                                                        data_dir=data_dir)
    if args.train_size is not None:
        if args.train_size > x_train.shape[0]:
            raise UserError(f"--train-size {args.train_size}: {args.dataset} has {x_train.shape[0]} training images")
        print(f"data: {args.dataset}, the first {args.train_size} of {x_train.shape[0]} training images "
              f"(--train-size) and {x_test.shape[0]} test images")
        x_train, t_train = x_train[:args.train_size], t_train[:args.train_size]
    else:
        print(f"data: {args.dataset}, {x_train.shape[0]} training and {x_test.shape[0]} test images")
    network = _conv_network(args, where) if conv else _fully_connected_network(args, where)
    if conv:
        print(f"model: {_describe_conv(network.architecture())}")
    else:
        print(f"model: {args.model} {'-'.join(str(n) for n in network.sizes)}, {network.activation}"
              f"{_layer_options(network.architecture())}")
    evaluated = args.evaluate_samples if args.evaluate_samples is not None else CONV_EVALUATED if conv else None
    if evaluated is not None and evaluated < max(x_train.shape[0], x_test.shape[0]):
        print(f"accuracy after each epoch: on the first {min(evaluated, x_train.shape[0])} training and "
              f"{min(evaluated, x_test.shape[0])} test images (--evaluate-samples); at the end: on all "
              f"{x_test.shape[0]} test images")
    optimizer_param = {} if args.lr is None else {"lr": args.lr}
    trainer = Trainer(network, x_train, t_train, x_test, t_test, epochs=args.epochs, mini_batch_size=args.batch_size,
                      optimizer=args.optimizer, optimizer_param=optimizer_param,
                      evaluate_sample_num_per_epoch=evaluated, seed=args.seed,
                      checkpoint=checkpoint, resume=resume, resume_anyway=args.resume_anyway)
    try:
        history = trainer.train()
    except KeyboardInterrupt:
        raise InterruptedRunError(_interrupted(trainer, checkpoint)) from None
    except FileExistsError:  # another run holds the checkpoint's lock: its message says which
        raise
    except OSError as error:  # the only file written while training is the checkpoint
        if checkpoint is None:
            raise
        raise UserError(f"--checkpoint {checkpoint}: could not write it after epoch {trainer.current_epoch}: "
                        f"{_reason(error)}") from None
    if save is not None:
        try:
            save_params(save, network, metadata={"dataset": args.dataset, "preprocessing": preprocessing,
                                                 "test_accuracy": history["final_test_accuracy"]})
        except OSError as error:
            kept = f"; the checkpoint {checkpoint} holds the same weights" if checkpoint is not None else ""
            raise UserError(f"--save {save}: could not write the weights: {_reason(error)}{kept}") from None
        print(f"saved the weights to {save} (anynet evaluate --weights {save})")
    if plot is not None:
        from .plot import close, plot_training_curves

        try:
            close(plot_training_curves(history, plot))  # saved: a figure left open would pile up in pyplot
        except OSError as error:
            raise UserError(f"--plot {plot}: could not write the plot: {_reason(error)}") from None
        print(f"saved the training curves to {plot}")
    return 0


def _fully_connected_network(args: argparse.Namespace, where):
    """The TwoLayerNet, MultiLayerNet or MultiLayerNetExtend that --model and its options describe."""
    from .networks import MultiLayerNet, MultiLayerNetExtend, TwoLayerNet

    activation = args.activation or "relu"
    init = args.weight_init or ("relu" if activation == "relu" else "sigmoid")
    if args.model == "two-layer":
        hidden = args.hidden[0] if args.hidden is not None else 100
        return TwoLayerNet(784, hidden, 10, activation=activation, device=where, seed=args.seed)
    hidden_sizes = args.hidden if args.hidden is not None else [100, 100]
    if args.model == "mlp-extend":
        return MultiLayerNetExtend(784, hidden_sizes, 10, activation=activation, weight_init_std=init,
                                   weight_decay_lambda=args.weight_decay, use_dropout=args.dropout is not None,
                                   dropout_ration=0.5 if args.dropout is None else args.dropout,
                                   use_batchnorm=args.batchnorm, device=where, seed=args.seed)
    return MultiLayerNet(784, hidden_sizes, 10, activation=activation, weight_init_std=init,
                         weight_decay_lambda=args.weight_decay, device=where, seed=args.seed)


def _conv_network(args: argparse.Namespace, where):
    """The book's SimpleConvNet (--model cnn) or DeepConvNet (deep-cnn) with its defaults, for 28x28 images, with
    --hidden's one size as its fully connected hidden layer."""
    from .networks import DeepConvNet, SimpleConvNet

    hidden = args.hidden[0] if args.hidden is not None else CONV_HIDDEN[args.model]
    if args.model == "cnn":
        return SimpleConvNet((1, 28, 28), hidden_size=hidden, output_size=10, device=where, seed=args.seed)
    return DeepConvNet((1, 28, 28), hidden_size=hidden, output_size=10, device=where, seed=args.seed)


def _check_conv_options(args: argparse.Namespace) -> None:
    """The fully connected models' options refused for a convolutional one, before the data loads (--batchnorm, and
    --dropout for cnn, are refused by _check_extend_options, as for the other models without those layers)."""
    model, name = args.model, CONV_MODELS[args.model]
    if args.hidden is not None and len(args.hidden) != 1:
        raise UserError(f"--hidden: --model {model} takes one size, that of its fully connected hidden layer "
                        f"(default {CONV_HIDDEN[model]}, the book's {name}), got {len(args.hidden)}: {args.hidden}")
    if args.activation not in (None, "relu"):
        raise UserError(f"--activation {args.activation}: --model {model} uses ReLU (the book's {name}); leave out "
                        "--activation")
    if args.weight_init is not None:
        drawn = "0.01 times standard normal draws" if model == "cnn" else "He's scale for each layer"
        raise UserError(f"--weight-init: --model {model} draws its weights the book's way ({name}: {drawn}); leave "
                        "out --weight-init")
    if args.weight_decay:
        raise UserError(f"--weight-decay: --model {model} has no weight decay (the book's {name}); leave out "
                        "--weight-decay, or use --model mlp or mlp-extend")
    if args.dropout is not None and model == "deep-cnn":
        raise UserError("--dropout: --model deep-cnn has the book's dropout 0.5 after each of its two Affine layers, "
                        "which it does not change; leave out --dropout")


def _describe_conv(architecture: dict) -> str:
    """One line for a convolutional architecture, e.g. "cnn (SimpleConvNet): conv 30 5x5 (stride 1, pad 0), pool
    2x2, hidden 100, 10 outputs"."""
    model = architecture["model"]
    if model == "cnn":
        param = architecture["conv_param"]
        layers = (f"conv {param['filter_num']} {param['filter_size']}x{param['filter_size']} (stride "
                  f"{param['stride']}, pad {param['pad']}), pool 2x2")
    else:
        params = [architecture[f"conv_param_{i}"] for i in range(1, 7)]
        sizes = {f"{param['filter_size']}x{param['filter_size']}" for param in params}
        layers = (f"conv {'-'.join(str(param['filter_num']) for param in params)} {'/'.join(sorted(sizes))} "
                  "(pool 2x2 after every second), dropout 0.5")
    return (f"{model} ({CONV_MODELS[model]}): {layers}, hidden {architecture['hidden_size']}, "
            f"{architecture['output_size']} outputs, relu")


class InterruptedRunError(Exception):
    """Ctrl-C during training, with where to resume from."""


def _interrupted(trainer, checkpoint: str | None) -> str:
    epoch = trainer.current_epoch + 1
    where = f"interrupted in epoch {epoch} of {trainer.epochs}"
    if trainer.last_checkpoint is None:
        return f"{where}; no checkpoint was written (--checkpoint FILE.npz keeps each finished epoch)"
    path, done = trainer.last_checkpoint
    return f"{where}; resume with --resume {path} (it holds epoch {done})"


# The options only MultiLayerNetExtend takes.
EXTEND_OPTIONS = {"--batchnorm": "batchnorm", "--dropout": "dropout"}


def _check_extend_options(args: argparse.Namespace) -> None:
    """--batchnorm and --dropout refused for models without those layers, a dropout ratio outside [0, 1) refused;
    before the data loads."""
    if args.model != "mlp-extend":
        for option, name in EXTEND_OPTIONS.items():
            if getattr(args, name) not in (None, False):
                raise UserError(f"{option}: --model {args.model} has no such layers; use --model mlp-extend (the "
                                "book's MultiLayerNetExtend), which takes --batchnorm and --dropout")
    ratio = args.dropout
    if ratio is not None and not 0.0 <= ratio < 1.0:  # NaN fails this too
        raise UserError(f"--dropout {ratio}: expected a ratio in [0, 1), the fraction of hidden units dropped at "
                        "train time (the book uses 0.15 to 0.5)")


def _layer_options(architecture: dict) -> str:
    """", batch norm, dropout 0.15" for an mlp-extend architecture with those layers ("" otherwise)."""
    shown = ""
    if architecture.get("use_batchnorm"):
        shown += ", batch norm"
    if architecture.get("use_dropout"):
        shown += f", dropout {architecture['dropout_ration']:g}"
    return shown


def _check_hyperparameters(args: argparse.Namespace) -> None:
    """--lr and --weight-decay refused before the data loads, in the command's words."""
    from .optimizers import check_hyperparameter

    for option, name, value, expected in (("--lr", "lr", args.lr, "> 0"),
                                          ("--weight-decay", "weight_decay_lambda", args.weight_decay, ">= 0")):
        if value is None:
            continue
        try:
            check_hyperparameter(option, name, value)
        except ValueError:
            raise UserError(f"{option} {value}: expected a finite number {expected}") from None


def _parse_sizes(text: str) -> list[int]:
    """``--sizes 784,100,10`` (or 784-100-10, as anynet prints them) as layer sizes."""
    parts = text.replace("-", ",").split(",")
    try:
        sizes = [int(part) for part in parts]
    except ValueError:
        sizes = []
    if len(sizes) < 2 or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected layer sizes such as 784,100,10")
    return sizes


def _dashed(sizes) -> str:
    return "-".join(map(str, sizes))


def _evaluate(args: argparse.Namespace) -> int:
    from .datasets import DATASETS, load_dataset
    from .io import read_network_file
    from .metrics import confusion_matrix

    weights, plot, data_dir = os.path.expanduser(args.weights), _path(args.plot), _path(args.data_dir)
    if not Path(weights).is_file():
        raise UserError(f"--weights {args.weights}: no such file")
    _check_output_path("--plot", plot)
    _check_data_dir(data_dir)
    model = read_network_file(weights, model=args.model)  # checked here: a bad file fails before the data is loaded
    conv = model.model in CONV_MODELS
    architecture, dataset, preprocessing, assumed = (_conv_settings if conv else _settings)(args, model)
    where = _pick_device(args.device)
    network, description = (_rebuild_conv if conv else _rebuild_fully_connected)(architecture, dataset, model, where)
    network.load_params(model.params)
    x, t = load_dataset(dataset, normalize=preprocessing.get("normalize", True), flatten=not conv, split="test",
                        data_dir=data_dir)
    if x.shape[0] == 0:
        raise UserError(f"the {dataset} test split holds no images: nothing to evaluate")
    shown = "normalized to [0, 1]" if preprocessing.get("normalize", True) else "pixels 0..255"
    print(f"data: {dataset} test split, {shown}{' (' + assumed + ')' if assumed else ''}")
    x, t = where.asarray(x, dtype="float32"), where.asarray(t)
    xp = where.xp
    # a convolution's im2col matrix of 10000 images would take gigabytes: 100 at a time, as the book scores them
    chunk = 100 if conv else 10000
    with where.active():  # CuPy's concat goes to its current GPU: make it the network's
        scores = xp.concat([network.predict(x[start:stop, ...]) for start, stop in chunk_bounds(x.shape[0], chunk)])
    counts = to_numpy(confusion_matrix(t, scores, 10)).tolist()
    names = DATASETS[dataset].class_names
    correct = sum(counts[i][i] for i in range(10))
    total = sum(map(sum, counts))
    print(f"model: {description}, from {weights}")
    print(f"accuracy: {correct / total:.4f} ({correct} of {total} {dataset} test images)")
    print("per-class accuracy:")
    width = max(len(name) for name in names)
    for i, name in enumerate(names):
        print(f"  {i}  {name:<{width}}  {counts[i][i] / max(sum(counts[i]), 1):.4f}  ({sum(counts[i])} images)")
    print("confusion matrix (rows: true class, columns: predicted class):")
    print("      " + "".join(f"{j:>6}" for j in range(10)))
    for i, row in enumerate(counts):
        print(f"  {i:>2}  " + "".join(f"{value:>6}" for value in row))
    if plot is not None:
        from .functions import softmax
        from .plot import close, plot_misclassified

        try:
            with where.active():
                probabilities = softmax(scores)
            close(plot_misclassified(x, t, probabilities, plot, class_names=names))
        except OSError as error:
            raise UserError(f"--plot {plot}: could not write the plot: {_reason(error)}") from None
        print(f"saved misclassified test images to {plot}")
    return 0


def _rebuild_fully_connected(architecture: dict, dataset: str, model, where):
    """The MultiLayerNet or MultiLayerNetExtend a fully connected architecture describes, on ``where``, and its
    description."""
    from .networks import ACTIVATIONS, MultiLayerNet, MultiLayerNetExtend

    if architecture["activation"] not in ACTIVATIONS:
        raise UserError(f"{model.path}: metadata 'architecture' activation {architecture['activation']!r}, expected "
                        f"one of {', '.join(ACTIVATIONS)}")
    sizes = architecture["sizes"]
    if sizes[0] != 784 or sizes[-1] != 10:
        raise UserError(f"{model.path}: a {_dashed(sizes)} network cannot classify {dataset} (784 inputs, 10 "
                        "classes)")
    network: MultiLayerNet | MultiLayerNetExtend
    if architecture.get("model") == "mlp-extend":  # its layers as recorded; the file holds their running statistics
        network = MultiLayerNetExtend(sizes[0], sizes[1:-1], sizes[-1], activation=architecture["activation"],
                                      use_dropout=architecture["use_dropout"],
                                      dropout_ration=architecture["dropout_ration"],
                                      use_batchnorm=architecture["use_batchnorm"], device=where)
    else:
        network = MultiLayerNet(sizes[0], sizes[1:-1], sizes[-1], activation=architecture["activation"],
                                device=where)
    kind = "mlp-extend " if architecture.get("model") == "mlp-extend" else ""
    return network, f"{kind}{_dashed(network.sizes)} {network.activation}{_layer_options(architecture)}"


def _rebuild_conv(architecture: dict, dataset: str, model, where):
    """The SimpleConvNet or DeepConvNet a (checked) convolutional architecture describes, on ``where``, and its
    description."""
    from .networks import DeepConvNet, SimpleConvNet

    dims, outputs = architecture["input_dim"], architecture["output_size"]
    if dims != [1, 28, 28] or outputs != 10:
        raise UserError(f"{model.path}: a {CONV_MODELS[architecture['model']]} of {'x'.join(map(str, dims))} images "
                        f"and {outputs} outputs cannot classify {dataset} (1x28x28 images, 10 classes)")
    settings = {key: value for key, value in architecture.items() if key != "model"}
    network = (SimpleConvNet if architecture["model"] == "cnn" else DeepConvNet)(**settings, device=where)
    recognised = " (recognised by its shapes, with the book's strides and pads)" if model.recognised else ""
    return network, f"{_describe_conv(architecture)}{recognised}"


def _conv_settings(args: argparse.Namespace, model) -> tuple[dict, str, dict, str]:
    """(architecture, dataset, preprocessing, what was assumed) for evaluating a convolutional network's ``model``:
    what its file records or its shapes show, and for the book's pickles MNIST; options that do not apply, or that
    contradict the file, are a UserError."""
    path, recorded = model.path, model.metadata
    architecture = model.architecture
    name = f"{architecture['model']} ({CONV_MODELS[architecture['model']]})"
    if args.model is not None and args.model != architecture["model"]:
        raise UserError(f"--model {args.model}: {path} holds a {name} network; leave out --model")
    for option, value in (("--sizes", args.sizes), ("--activation", args.activation)):
        if value is not None:
            raise UserError(f"{option}: {path} holds a {name} network, whose layers the file sets; leave out "
                            f"{option}")
    if args.dataset is not None and recorded.get("dataset") not in (None, args.dataset):
        raise UserError(f"--dataset {args.dataset}: {path} was trained on {recorded['dataset']}; leave out "
                        f"--dataset, or name {recorded['dataset']}")
    dataset = args.dataset or recorded.get("dataset") or ("mnist" if model.pickle else None)
    if dataset is None:
        raise UserError(f"{path}: records no dataset, so which test images to score is unknown; name it: "
                        "--dataset mnist (or fashion-mnist), or save it with the weights: anynet.save_params(path, "
                        "network, metadata={\"dataset\": \"mnist\"})")
    preprocessing = recorded.get("preprocessing")
    assumed = "" if preprocessing is not None else "not recorded in the file: the book's normalize=True"
    return architecture, dataset, preprocessing or {}, assumed


def _settings(args: argparse.Namespace, model) -> tuple[dict, str, dict, str]:
    """(architecture, dataset, preprocessing, what was assumed) for evaluating ``model``: what its file records,
    what the command line names, and for the book's pickles the book's sigmoid MNIST network. A file that
    records neither, or a command line that contradicts the file, is a UserError naming both."""
    path, recorded = model.path, model.metadata
    architecture = recorded.get("architecture")
    if args.model not in (None, "mlp"):
        kind = "mlp-extend (MultiLayerNetExtend)" if model.model == "mlp-extend" else "fully connected"
        raise UserError(f"--model {args.model}: {path} holds a {kind} network (2-D weights W1, ...); leave out "
                        "--model")
    if architecture is None and model.pickle:  # the book's format: chapter 3's sigmoid network on MNIST
        architecture = {"sizes": model.sizes, "activation": args.activation or "sigmoid"}
    dataset = recorded.get("dataset") or ("mnist" if model.pickle and not args.dataset else None)
    dataset_fix = "--dataset mnist (or fashion-mnist)"
    if architecture is None and args.activation is None:
        also = f" {dataset_fix}" if dataset is None and args.dataset is None else ""
        raise UserError(f"{path}: records no architecture, so its activation is unknown (an .npz saved with "
                        f"save_params(path, network.params)?); name it: --sizes {','.join(map(str, model.sizes))} "
                        f"--activation relu (or sigmoid){also}, or save the network itself: "
                        "anynet.save_params(path, network)")
    if dataset is None and args.dataset is None:
        raise UserError(f"{path}: records no dataset, so which test images to score is unknown; name it: "
                        f"{dataset_fix}, or save it with the weights: anynet.save_params(path, network, "
                        "metadata={\"dataset\": \"mnist\"})")
    if architecture is None:
        architecture = {"sizes": args.sizes or model.sizes, "activation": args.activation}
    elif not model.pickle and args.activation is not None and args.activation != architecture["activation"]:
        raise UserError(f"--activation {args.activation}: {path} records {architecture['activation']}; "
                        "leave out --activation")
    if args.sizes is not None and args.sizes != model.sizes:
        raise UserError(f"--sizes {','.join(map(str, args.sizes))}: the weights in {path} are a "
                        f"{_dashed(model.sizes)} network")
    if args.dataset is not None and recorded.get("dataset") not in (None, args.dataset):
        raise UserError(f"--dataset {args.dataset}: {path} was trained on {recorded['dataset']}; leave out "
                        f"--dataset, or name {recorded['dataset']}")
    dataset = args.dataset or dataset
    assert dataset is not None  # refused above otherwise
    preprocessing = recorded.get("preprocessing")
    assumed = "" if preprocessing is not None else "not recorded in the file: the book's normalize=True"
    return architecture, dataset, preprocessing or {}, assumed


DATA_DIR_HELP = ("the folder that holds mnist/ and fashion-mnist/, as ANYNET_DATA does (a folder holding the "
                 "files themselves works too); searched before ANYNET_DATA, the user cache and /usr/share/datasets")


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
                                            "train in under a minute on a laptop CPU. The convolutional networks "
                                            "are slower: on a 2-core CPU an epoch of --model cnn takes a minute or "
                                            "two, one of deep-cnn several (--train-size trains on fewer images).")
    train.add_argument("--dataset", default="mnist", choices=["mnist", "fashion-mnist"])
    train.add_argument("--model", default="mlp", choices=["mlp", "two-layer", "mlp-extend", "cnn", "deep-cnn"],
                       help="mlp: the book's MultiLayerNet (default); two-layer: TwoLayerNet; mlp-extend: "
                            "MultiLayerNetExtend, which takes --batchnorm and --dropout; cnn: SimpleConvNet (chapter "
                            "7); deep-cnn: DeepConvNet (chapter 8). The convolutional ones take the images as "
                            "1x28x28 and keep the book's layers, initial weights and dropout")
    train.add_argument("--hidden", type=int, nargs="+", default=None, metavar="N",
                       help="hidden layer sizes (default: 100 100; two-layer takes one, default 100; cnn and "
                            "deep-cnn take one, the size of their fully connected hidden layer, default 100 and 50)")
    train.add_argument("--activation", default=None, choices=["relu", "sigmoid"],
                       help="the hidden layers' activation (default relu; cnn and deep-cnn use relu only)")
    train.add_argument("--batchnorm", action="store_true",
                       help="batch normalization after each hidden layer's Affine (mlp-extend only)")
    train.add_argument("--dropout", type=float, default=None, metavar="RATIO",
                       help="dropout after each hidden layer's activation, dropping RATIO of its units at train "
                            "time, in [0, 1), e.g. 0.15 (mlp-extend only)")
    train.add_argument("--weight-init", default=None,
                       help="mlp and mlp-extend weight scale: relu/he, sigmoid/xavier or a number (default: from "
                            "--activation)")
    train.add_argument("--weight-decay", type=float, default=0.0,
                       help="L2 weight decay lambda (mlp and mlp-extend; default 0)")
    train.add_argument("--optimizer", default="adam",
                       choices=["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam"])
    train.add_argument("--lr", type=float, default=None, help="learning rate (default: the optimizer's; Adam 0.001)")
    train.add_argument("--epochs", type=int, default=10)
    train.add_argument("--batch-size", type=int, default=100)
    train.add_argument("--train-size", type=int, default=None, metavar="N",
                       help="train on the first N training images only (default: all of them), as the book suggests "
                            "where training takes too long")
    train.add_argument("--evaluate-samples", type=int, default=None, metavar="N",
                       help="measure the accuracies after each epoch on the first N training and test images "
                            f"(default: all of them; cnn and deep-cnn: {CONV_EVALUATED}, as the book does); the "
                            "final test accuracy is always on the whole test set")
    train.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N, torch:cuda, ...")
    train.add_argument("--seed", type=int, default=0,
                       help="seeds the initial weights, batch order and dropout masks (default 0)")
    train.add_argument("--save", metavar="FILE.npz", help="save the trained weights (for anynet evaluate)")
    train.add_argument("--plot", metavar="FILE.png", help="save loss and accuracy curves (needs matplotlib)")
    train.add_argument("--checkpoint", metavar="FILE.npz", help="write a checkpoint after every epoch")
    train.add_argument("--resume", metavar="FILE.npz", help="continue from a checkpoint")
    train.add_argument("--resume-anyway", action="store_true",
                       help="resume even if the checkpoint was made with other settings or data (listed when refused)")
    train.add_argument("--data-dir", metavar="DIR", help=DATA_DIR_HELP)
    train.set_defaults(run=_train)

    evaluate = commands.add_parser("evaluate", help="accuracy, per-class accuracy and confusion matrix of weights")
    evaluate.add_argument("--weights", required=True, metavar="FILE",
                          help="an .npz from anynet train --save or anynet.save_params(path, network), or the "
                               "book's pickle (sample_weight.pkl: a sigmoid network for MNIST; params.pkl: "
                               "SimpleConvNet; deep_convnet_params.pkl: DeepConvNet)")
    evaluate.add_argument("--dataset", default=None, choices=["mnist", "fashion-mnist"],
                          help="default: the one recorded in the weights file (the book's pickles: mnist)")
    evaluate.add_argument("--sizes", type=_parse_sizes, metavar="N,N,...",
                          help="layer sizes, e.g. 784,100,100,10: checked against the weights (for a file that "
                               "records no architecture)")
    evaluate.add_argument("--activation", choices=["relu", "sigmoid"],
                          help="the hidden layers' activation, for a file that records no architecture")
    evaluate.add_argument("--model", choices=["mlp", "cnn", "deep-cnn"], default=None,
                          help="the network a file without an architecture holds: mlp (fully connected), cnn "
                               "(SimpleConvNet) or deep-cnn (DeepConvNet); default: recognised by its weights' "
                               "shapes (the book's params.pkl is a SimpleConvNet, deep_convnet_params.pkl a "
                               "DeepConvNet)")
    evaluate.add_argument("--device", default="auto")
    evaluate.add_argument("--data-dir", metavar="DIR", help=DATA_DIR_HELP)
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
    except InterruptedRunError as interrupt:
        print(f"anynet {args.command}: {interrupt}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(f"anynet {args.command}: interrupted", file=sys.stderr)
        return 130
    except (UserError, ValueError, TypeError, OSError, ImportError, FloatingPointError) as error:
        # the first line is the reason; dataset errors add where they looked and how to fix it, in the command's words
        print(f"anynet {args.command}: error: {getattr(error, 'cli_message', error)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
