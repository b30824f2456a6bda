"""The ``auto`` choices of device, dtype and model size, made the same way everywhere
(profiler, testbed, training): CUDA when torch sees a GPU; float16 and the real
architectures on CUDA, float32 and the tiny ones on a CPU."""

from __future__ import annotations

from typing import Literal, cast

Device = Literal["cpu", "cuda"]
DeviceChoice = Literal["auto", "cpu", "cuda"]
DType = Literal["float32", "float16", "bfloat16"]
DTypeChoice = Literal["auto", "float32", "float16", "bfloat16"]
ModelSize = Literal["real", "tiny"]
ModelSizeChoice = Literal["auto", "real", "tiny"]


def cuda_available() -> bool:
    """torch sees a CUDA device (torch imported only here)."""
    import torch

    return bool(torch.cuda.is_available())


def resolve_device(choice: DeviceChoice | str, *, has_cuda: bool | None = None) -> Device:
    """``auto``: CUDA when available (``has_cuda``, default: torch's answer), else CPU;
    ``cuda`` without a CUDA device is an error."""
    if choice not in ("auto", "cpu", "cuda"):
        raise ValueError(
            f"device {choice!r} is not supported; choose one of ['auto', 'cpu', 'cuda']"
        )
    if choice == "cpu":
        return "cpu"
    available = cuda_available() if has_cuda is None else has_cuda
    if choice == "cuda" and not available:
        raise RuntimeError("device 'cuda' was asked for but torch sees no CUDA device")
    return "cuda" if available else "cpu"


def resolve_dtype(choice: DTypeChoice | str, device: Device) -> DType:
    """``auto``: float16 on CUDA, float32 on CPU (float16 on CPU is refused: not every
    kernel has it)."""
    dtype = choice if choice != "auto" else ("float16" if device == "cuda" else "float32")
    if dtype not in ("float32", "float16", "bfloat16"):
        raise ValueError(
            f"dtype {choice!r} is not supported; choose one of ['auto', 'float32', 'float16', "
            "'bfloat16']"
        )
    if device == "cpu" and dtype == "float16":
        raise ValueError("dtype float16 on CPU is not supported by every kernel; use float32")
    return cast(DType, dtype)


def resolve_model_size(choice: ModelSizeChoice | str, device: Device) -> ModelSize:
    """``auto``: the real architectures on CUDA, the tiny ones on CPU."""
    if choice not in ("auto", "real", "tiny"):
        raise ValueError(
            f"model size {choice!r} is not supported; choose one of ['auto', 'real', 'tiny']"
        )
    if choice == "auto":
        return "real" if device == "cuda" else "tiny"
    return cast(ModelSize, choice)
