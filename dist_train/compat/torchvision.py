"""Import torchvision on a CPU-only torch whose matching torchvision wheel is a CUDA build.

PyPI's torchvision wheels are CUDA builds; on a CPU build of torch their compiled ops cannot load, and
`import torchvision` then fails while registering fake kernels for `torchvision::nms` and `torchvision::qnms`
("operator torchvision::nms does not exist"). Declaring those two op schemas first lets the pure-Python parts
(datasets, transforms.v2, models) import and work; nms itself stays unavailable. This runs only when the normal
import fails that way; a GPU user with matching builds never reaches it.
"""

from __future__ import annotations

import sys

from dist_train.errors import UsageError

_library = None  # keep the torch.library.Library alive: dropping it would unregister the schemas


def import_torchvision():
    global _library
    try:
        import torchvision
        return torchvision
    except ModuleNotFoundError:
        raise UsageError(
            "torchvision is not installed; install it with: "
            "pip install -c launch/constraints-cpu.txt 'dist-train[vision]' "
            "(the constraints file pins the torchvision that matches a CPU torch 2.13.0)"
        ) from None
    except RuntimeError as e:
        if "torchvision::nms" not in str(e):
            raise
    import torch

    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    _library = torch.library.Library("torchvision", "DEF")
    _library.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _library.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    import torchvision
    return torchvision
