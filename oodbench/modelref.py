"""Models named by reference, as ``oodbench eval --model`` takes them: ``timm:NAME``,
``torchvision:NAME`` or ``FILE.py:FACTORY``, with optional weights from a ``.safetensors`` or
``.pt`` file (read with ``weights_only``; oodbench's checkpoints and plain state_dicts alike).

Nothing is downloaded unless ``pretrained=True`` (timm's and torchvision's default weights,
for a machine with a network); a download that cannot reach its server is a
:class:`~oodbench.errors.CheckpointError` naming the model. Hub references (timm's
``hf-hub:`` and ``local-dir:`` names) are refused: their weights are not a file oodbench can
hash. A factory file runs as a plugin file does (:func:`oodbench.usercode.run_file`): what it
raises is one :class:`~oodbench.errors.PluginError` naming the file and the line.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from torch import nn

from oodbench.config import check_name
from oodbench.errors import CheckpointError, ConfigError
from oodbench.registry import did_you_mean
from oodbench.usercode import run_file, user_code
from oodbench.weights import load_into, read_weights

R = TypeVar("R")

# timm:NAME, torchvision:NAME or FILE.py:FACTORY
REFERENCE = re.compile(r"(?:timm|torchvision):[\w.-]+|[^:]+\.py:[A-Za-z_]\w*")
# timm:hf-hub:ORG/NAME, timm:local-dir:PATH and the like: weights from elsewhere than a file
HUB_REFERENCE = re.compile(r"(?:timm|torchvision):[\w-]+:.*")
# the packages whose exceptions mean a server could not be reached (with OSError, which
# urllib's URLError, socket errors and huggingface_hub's errors are)
NETWORK_PACKAGES = frozenset({"httpx", "httpx2", "httpcore", "httpcore2", "requests",
                              "urllib3", "huggingface_hub"})


def is_reference(value: str) -> bool:
    """Whether ``value`` names a model by reference rather than by oodbench's registry."""
    return ":" in value


def check_reference(value: str) -> str:
    """``value`` if it is a well-formed reference (nothing is imported), else ValueError."""
    if HUB_REFERENCE.fullmatch(value):
        family, _, rest = value.partition(":")
        raise ValueError(
            f"{value!r} is a hub reference ({rest.partition(':')[0]}:), and hub references "
            "are not supported: oodbench loads weights only from a file it can hash; download "
            f"them (huggingface_hub.hf_hub_download) and pass {family}:ARCH with "
            "<weights=FILE>, or return the model from your own FILE.py:FACTORY")
    if not REFERENCE.fullmatch(value):
        raise ValueError(f"{value!r} is not a model reference: use timm:NAME, "
                         "torchvision:NAME or FILE.py:FACTORY")
    return value


def reference_name(ref: str) -> str:
    """The name of the model ``ref`` names (its NAME or FACTORY), for its results folder: a
    :class:`ConfigError` for a reference that is not well formed, or a name that is not safe."""
    try:
        check_reference(ref)
    except ValueError as e:
        raise ConfigError(f"<model={ref}>: {e}") from None
    return check_name(ref.rpartition(":")[2], "model name")


def _network_error(e: BaseException | None) -> bool:
    """Whether ``e``, or an exception it was raised from, is a failure to reach a server."""
    while e is not None:
        if isinstance(e, OSError) or type(e).__module__.partition(".")[0] in NETWORK_PACKAGES:
            return True
        e = e.__cause__ or e.__context__
    return False


def _fetching(ref: str, build: Callable[[], R]) -> R:
    """``build()``, which downloads the pretrained weights of ``ref``: a download that cannot
    reach its server is a :class:`CheckpointError` naming the model and how to work offline."""
    try:
        return build()
    except Exception as e:
        if not _network_error(e):
            raise
        detail = str(e).splitlines()[0] if str(e) else ""
        raise CheckpointError(
            f"<model={ref}>: its pretrained weights could not be fetched "
            f"({type(e).__name__}: {detail}); there is no network here, or the server did not "
            "answer",
            "fetch them once on a machine with a network and copy its cache here "
            "(~/.cache/huggingface for timm, ~/.cache/torch/hub for torchvision; $HF_HOME and "
            "$TORCH_HOME move them), or save the model's state_dict to a file and pass "
            "<weights=FILE> instead of <pretrained=True>") from e


def _timm(name: str, num_classes: int, pretrained: bool) -> nn.Module:
    try:
        import timm
    except ModuleNotFoundError:
        raise ConfigError(f"<model=timm:{name}>: timm models need the timm package, which is "
                          "not installed", "install it with pip install 'oodbench[models]'"
                          ) from None

    if name not in timm.list_models():
        close = did_you_mean(name, timm.list_models())
        raise ConfigError(f"<model=timm:{name}>: timm has no model {name!r}"
                          + (f";{close}" if close else ""), "see timm.list_models()")
    return _fetching(f"timm:{name}", lambda: timm.create_model(
        name, pretrained=pretrained, num_classes=num_classes))


def _torchvision(name: str, num_classes: int, pretrained: bool) -> nn.Module:
    from torchvision import models

    names = models.list_models(module=models)
    if name not in names:
        raise ConfigError(f"<model=torchvision:{name}>: torchvision has no classification "
                          f"model {name!r};{did_you_mean(name, names)}",
                          "see torchvision.models.list_models()")
    model = models.get_model(name, weights=None, num_classes=num_classes)
    if pretrained:  # as timm does: the pretrained weights, a new head where num_classes differs
        default = models.get_model_weights(name).DEFAULT
        state = _fetching(f"torchvision:{name}", lambda: default.get_state_dict(progress=False))
        own = model.state_dict()
        model.load_state_dict({k: v for k, v in state.items()
                               if k in own and own[k].shape == v.shape}, strict=False)
    return model


def _factory(file: str, factory: str, num_classes: int) -> nn.Module:
    path = Path(file).expanduser().resolve()
    where = f"<model={file}:{factory}>: model file {path}"
    if not path.is_file():
        raise ConfigError(f"{where} {'is not a file' if path.exists() else 'does not exist'}")
    hint = "fix the file (or install what it imports)"
    module = run_file(path, "oodbench_model_", where, hint)
    fn = getattr(module, factory, None)
    if not callable(fn):
        raise ConfigError(f"{where} defines no function {factory!r}")
    with user_code(where, f"raised in {factory}()", hint, path):
        takes = inspect.signature(fn).parameters
        return fn(num_classes=num_classes) if "num_classes" in takes else fn()


def load_model(ref: str, num_classes: int, weights: Path | str | None = None,
               pretrained: bool = False) -> nn.Module:
    """The model ``ref`` names (see the module docstring) with ``num_classes`` outputs, in
    eval mode, with ``weights`` loaded when given."""
    try:
        check_reference(ref)
    except ValueError as e:
        raise ConfigError(f"<model={ref}>: {e}") from None
    kind, _, name = ref.rpartition(":")
    if kind == "timm":
        model = _timm(name, num_classes, pretrained)
    elif kind == "torchvision":
        model = _torchvision(name, num_classes, pretrained)
    elif kind.endswith(".py"):
        model = _factory(kind, name, num_classes)
    else:
        raise ConfigError(f"<model={ref}>: unknown kind {kind!r}",
                          "use timm:NAME, torchvision:NAME or FILE.py:FACTORY")
    if not isinstance(model, nn.Module):
        raise ConfigError(f"<model={ref}> gave a {type(model).__name__}, not an nn.Module")
    if weights is not None:
        load_into(model, read_weights(weights), weights)
    return model.eval()
