"""Recipe mistakes reported as recipe mistakes, before training starts or on its first batch.

A recipe is user code; when it breaks the contract of dist_train.recipe.Recipe (build_model returns None, the loss
is not a scalar, datasets of unequal length, a model that does not fit its data, a dict batch without "labels"),
the user should read which recipe method did what, and what was expected, in one line with exit code 2, within
seconds, not a traceback from deep inside the loop after N steps. These wrappers run each recipe method once at
start-up (or on the first training batch, which the loop runs anyway) and translate failures into UsageError.
"""

from __future__ import annotations

from typing import Any

from dist_train.errors import UsageError

_SHOWN = 200  # characters of a value or section shown in a message


def _short(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def _sections(recipe) -> str:
    from dist_train.config.typed import to_dict

    shown = [f"{name}: {to_dict(value)}" for name, value in recipe.config.sections.items()]
    return f" (its sections: {_short('; '.join(shown))})" if shown else ""


def _failed(recipe, method: str, e: BaseException) -> UsageError:
    return UsageError(f"recipe {recipe.config.recipe}: {method} failed: {type(e).__name__}: {_short(e)}"
                      f"{_sections(recipe)}")


def describe(value: Any) -> str:
    """'tensor [16, 784] float32', "dict with keys ['input_ids', 'labels']", 'tuple of 2 ...'."""
    import torch

    if isinstance(value, torch.Tensor):
        return f"tensor {list(value.shape)} {str(value.dtype).removeprefix('torch.')}"
    if isinstance(value, dict):
        return f"dict with keys {list(value)[:8]}"
    if isinstance(value, (list, tuple)):
        return f"{type(value).__name__} of {len(value)}: " + ", ".join(describe(v) for v in value[:4])
    return type(value).__name__


def build_model(recipe):
    from torch import nn

    try:
        model = recipe.build_model()
    except UsageError:
        raise
    except Exception as e:  # noqa: BLE001 - user code: any failure is the recipe's
        raise _failed(recipe, "build_model()", e) from None
    if not isinstance(model, nn.Module):
        raise UsageError(f"recipe {recipe.config.recipe}: build_model() returned {describe(model)}; it must return a "
                         "torch.nn.Module")
    return model


def build_datasets(recipe) -> tuple[Any, Any]:
    try:
        datasets = recipe.build_datasets()
    except UsageError:
        raise
    except Exception as e:  # noqa: BLE001
        raise _failed(recipe, "build_datasets()", e) from None
    if not (isinstance(datasets, tuple) and len(datasets) == 2):
        raise UsageError(f"recipe {recipe.config.recipe}: build_datasets() returned {describe(datasets)}; it must "
                         "return (train_dataset, eval_dataset or None)")
    from torch.utils.data import IterableDataset

    for role, data in zip(("train", "eval"), datasets):
        if data is None and role == "eval":
            continue
        if role == "train" and isinstance(data, IterableDataset):
            continue  # a streaming source: the loader checks it (dist_train.data.loading.build_train_loader)
        if not hasattr(data, "__len__") or not hasattr(data, "__getitem__"):
            raise UsageError(f"recipe {recipe.config.recipe}: build_datasets() gave a {role} dataset of type "
                             f"{type(data).__name__}, which has no len() and indexing; return map-style datasets")
        if len(data) == 0:
            raise UsageError(f"recipe {recipe.config.recipe}: build_datasets() gave an empty {role} dataset")
    return datasets


def checked_loss(recipe, model, batch, expected_batch_size: int):
    """The first training micro-batch through the recipe, with every contract check (the loop runs it anyway)."""
    import torch

    name = recipe.config.recipe
    try:
        n = recipe.batch_size(batch)
    except Exception as e:  # noqa: BLE001
        raise _contract_error(recipe, "batch_size(batch)", e, batch) from None
    if n != expected_batch_size:
        raise UsageError(f"recipe {name}: batch_size(batch) says {n} samples in a training batch of "
                         f"{describe(batch)}, but train.batch_size is {expected_batch_size}; override "
                         "Recipe.batch_size (or inputs) for this batch layout")
    try:
        outputs = recipe.forward(model, batch)
    except Exception as e:  # noqa: BLE001
        raise _contract_error(recipe, "forward()", e, batch, " on the first training batch") from None
    try:
        loss = recipe.loss(outputs, batch)
    except Exception as e:  # noqa: BLE001
        raise _contract_error(recipe, "loss()", e, batch, f" on the first training batch (outputs: {describe(outputs)})") from None
    total = loss[0] if isinstance(loss, (tuple, list)) and len(loss) == 2 else loss  # token-weighted (sum, count)
    if not (isinstance(total, torch.Tensor) and total.ndim == 0 and total.is_floating_point()):
        raise UsageError(f"recipe {name}: loss() returned {describe(loss)}; it must return a scalar floating-point "
                         "tensor (e.g. the mean over the batch), or a (sum, count) pair for a token-weighted loss")
    if total is not loss and not (isinstance(loss[1], int) or isinstance(loss[1], torch.Tensor) and loss[1].ndim == 0):
        raise UsageError(f"recipe {name}: loss() returned {describe(loss)}; the count of a (sum, count) pair must be "
                         "an int or a scalar tensor (e.g. the number of non-padding tokens)")
    if not total.requires_grad:
        raise UsageError(f"recipe {name}: loss() returned a tensor that does not require grad; compute it from the "
                         "model's outputs (no .item(), .detach() or torch.no_grad() in loss or forward)")
    return loss


def check_eval(recipe, model, dataset, metrics: dict, autocast) -> None:
    """One eval forward on two samples, with the metrics' update, before the first step: a recipe whose eval would
    fail after N steps fails now. Eval mode and no_grad change no weights and no statistics; the random generators
    are forked, so the run draws the same numbers as without the check."""
    import torch

    from dist_train.data import fetch, to_device

    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    batch = to_device(fetch(dataset, torch.arange(min(2, len(dataset)))), device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), autocast():
            try:
                recipe.batch_size(batch)
                targets = recipe.targets(batch)
            except Exception as e:  # noqa: BLE001
                raise _contract_error(recipe, "batch_size/targets", e, batch, " on an eval batch") from None
            try:
                outputs = recipe.forward(model, batch)
                recipe.loss(outputs, batch)
            except Exception as e:  # noqa: BLE001
                raise _contract_error(recipe, "forward/loss", e, batch, " on an eval batch") from None
            for metric_name, metric in metrics.items():
                try:
                    metric.update(outputs.float() if isinstance(outputs, torch.Tensor) else outputs, targets)
                except Exception as e:  # noqa: BLE001
                    raise _contract_error(recipe, f"metric '{metric_name}'", e, batch,
                                          f" on an eval batch (outputs: {describe(outputs)})") from None
    finally:
        model.train(was_training)


def _contract_error(recipe, method: str, e: BaseException, batch, where: str = "") -> UsageError:
    hint = ""
    if isinstance(batch, dict) and isinstance(e, KeyError):
        hint = ("; dict batches put the targets under 'labels' (Hugging Face convention), or override "
                "Recipe.inputs/targets/batch_size")
    elif isinstance(e, (IndexError, KeyError, TypeError)):
        hint = "; override Recipe.inputs/targets/batch_size if batches are not (inputs, ..., targets) tuples"
    return UsageError(f"recipe {recipe.config.recipe}: {method} failed{where} ({describe(batch)}): "
                      f"{type(e).__name__}: {_short(e)}{hint}")

