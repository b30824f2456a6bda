"""The testbed's diffusion engine, model folders, tokenizer and cache (no Ray).

The anchor: with one patch the testbed's reverse loop *is* the diffusers pipeline
(StableDiffusionPipeline / StableDiffusionXLPipeline loaded from the same folder, same
scheduler, same seed): latents and images are equal exactly."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

from eat.testbed.engine import (  # noqa: E402
    Band,
    GenerationRequest,
    aligned_margin,
    generate,
    png_bytes,
    row_bands,
)
from eat.testbed.models import (  # noqa: E402
    MARKER,
    CacheEvent,
    ModelCache,
    ModelCacheError,
    build_tokenizer,
    clip_vocabulary,
    load_model,
    prepare_model_folder,
    weight_file_bytes,
)

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

PROMPT = "a watercolor painting of a lighthouse"


@pytest.fixture(scope="module")
def model_root(tmp_path_factory):
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def folders(model_root):
    torch.set_num_threads(1)
    return {
        (model, scheduler): prepare_model_folder(
            model_root, model, "tiny", seed=3, scheduler=scheduler
        )
        for model in ("sd15", "sdxl")
        for scheduler in ("ddim", "euler")
    }


def loaded(folders, model, scheduler):
    return load_model(
        model, folders[(model, scheduler)], device="cpu", dtype="float32", scheduler=scheduler
    )


# --------------------------------------------------------------------------- the anchor


@pytest.mark.parametrize("scheduler", ["ddim", "euler"])
@pytest.mark.parametrize("model", ["sd15", "sdxl"])
def test_one_patch_equals_the_diffusers_pipeline(folders, model, scheduler):
    request = GenerationRequest(PROMPT, 128, 4, 5.0, seed=11)
    ours = generate(loaded(folders, model, scheduler), request)
    pipe = diffusers.DiffusionPipeline.from_pretrained(
        folders[(model, scheduler)], local_files_only=True
    )
    pipe.set_progress_bar_config(disable=True)
    expected_class = "StableDiffusionPipeline" if model == "sd15" else "StableDiffusionXLPipeline"
    assert type(pipe).__name__ == expected_class
    kwargs = dict(height=128, width=128, num_inference_steps=4, guidance_scale=5.0)
    latents = pipe(
        PROMPT, generator=torch.Generator("cpu").manual_seed(11), output_type="latent", **kwargs
    ).images
    image = pipe(
        PROMPT, generator=torch.Generator("cpu").manual_seed(11), output_type="np", **kwargs
    ).images[0]
    assert torch.equal(ours.latents, latents)
    assert np.array_equal(ours.image, image)
    assert ours.image.shape == (128, 128, 3) and ours.image.std() > 0.01
    assert len(ours.step_seconds) == 4


def test_negative_prompt_and_no_guidance_also_match(folders):
    model = loaded(folders, "sd15", "ddim")
    pipe = diffusers.DiffusionPipeline.from_pretrained(
        folders[("sd15", "ddim")], local_files_only=True
    )
    pipe.set_progress_bar_config(disable=True)
    for guidance, negative in ((7.5, "blurry"), (1.0, None)):
        request = GenerationRequest(PROMPT, 64, 3, guidance, seed=5, negative_prompt=negative)
        ours = generate(model, request)
        theirs = pipe(
            PROMPT,
            negative_prompt=negative,
            height=64,
            width=64,
            num_inference_steps=3,
            guidance_scale=guidance,
            generator=torch.Generator("cpu").manual_seed(5),
            output_type="latent",
        ).images
        assert torch.equal(ours.latents, theirs), (guidance, negative)


# --------------------------------------------------------------------------- patches


def test_row_bands_cover_the_latent_on_aligned_boundaries():
    bands = row_bands(32, 4, margin=3, align=2)
    assert [(b.own_start, b.own_stop) for b in bands] == [(0, 8), (8, 16), (16, 24), (24, 32)]
    assert aligned_margin(3, 2) == 4
    assert bands[0] == Band(0, 8, 0, 12) and bands[-1] == Band(24, 32, 20, 32)
    assert all(b.computed_rows % 2 == 0 and b.owned_rows % 2 == 0 for b in bands)
    uneven = row_bands(16, 3, margin=0, align=2)  # 8 units over 3 patches: 2, 3, 3 units
    assert [b.owned_rows for b in uneven] == [4, 6, 6]
    assert row_bands(16, 1, margin=8, align=2) == [Band(0, 16, 0, 16)]


@pytest.mark.parametrize(
    ("rows", "patches", "align", "message"),
    [
        (15, 2, 2, "not a multiple of the UNet alignment 2"),
        (8, 8, 2, "cannot split 8 latent rows into 8 patches"),
        (16, 0, 2, "patches must be >= 1"),
    ],
)
def test_row_bands_reject_impossible_splits(rows, patches, align, message):
    with pytest.raises(ValueError, match=message):
        row_bands(rows, patches, margin=0, align=align)


def test_patches_with_a_whole_image_margin_equal_one_patch(folders):
    """Every band then sees the whole latent: the gathered prediction is the full one,
    so the exchange (gather owned rows, step the whole latent) is exact."""
    model = loaded(folders, "sdxl", "ddim")
    request = GenerationRequest(PROMPT, 128, 3, 5.0, seed=2)
    one = generate(model, request)
    four = generate(model, request, patches=4, margin=16)
    assert torch.equal(one.latents, four.latents)


def test_a_larger_margin_brings_patches_closer_to_the_whole_image(folders):
    model = loaded(folders, "sd15", "ddim")
    request = GenerationRequest(PROMPT, 128, 3, 5.0, seed=2)
    whole = generate(model, request).latents
    errors = [
        float((generate(model, request, patches=2, margin=m).latents - whole).abs().mean())
        for m in (0, 4, 8)
    ]
    assert errors[0] > errors[1] > errors[2] == 0.0


# --------------------------------------------------------------------------- folders, tokenizer


def test_tokenizer_is_deterministic_and_ends_with_the_highest_id():
    vocabulary = clip_vocabulary()
    assert len(vocabulary) == 514 and vocabulary["<|endoftext|>"] == 513
    assert clip_vocabulary() == vocabulary
    tokenizer = build_tokenizer()
    ids = tokenizer(PROMPT, padding="max_length", max_length=77, return_tensors="pt").input_ids[0]
    assert ids.shape == (77,) and ids[0] == 512
    assert int(ids.argmax()) == len(PROMPT.replace(" ", "")) + 1  # one token per character
    again = build_tokenizer()(PROMPT, padding="max_length", max_length=77).input_ids
    assert again == ids.tolist()


def test_model_folder_is_made_once_and_remade_for_another_recipe(model_root, folders):
    folder = folders[("sd15", "ddim")]
    marker = json.loads((folder / MARKER).read_text())
    assert marker["model"] == "sd15" and marker["seed"] == 3
    stamp = (folder / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns
    again = prepare_model_folder(model_root, "sd15", "tiny", seed=3, scheduler="ddim")
    assert again == folder
    assert (folder / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns == stamp
    other = prepare_model_folder(model_root, "sd15", "tiny", seed=4, scheduler="ddim")
    assert other != folder and weight_file_bytes(other) == weight_file_bytes(folder)
    for name in ("model_index.json", "tokenizer/tokenizer.json", "scheduler/scheduler_config.json"):
        assert (folder / name).is_file(), name


def test_png_is_the_rounded_image(folders):
    image = generate(
        loaded(folders, "sd15", "ddim"), GenerationRequest(PROMPT, 64, 2, 5.0, 1)
    ).image
    from PIL import Image

    decoded = np.asarray(Image.open(io.BytesIO(png_bytes(image))))
    assert np.array_equal(decoded, (image * 255).round().astype(np.uint8))


# --------------------------------------------------------------------------- cache


class _FakeLoaded:
    def __init__(self, name):
        self.name = name
        self.load_seconds = 0.0


def test_cache_evicts_least_recently_used_within_budget():
    loads = []

    def loader(name):
        loads.append(name)
        return _FakeLoaded(name)

    cache = ModelCache(10, {"a": 4, "b": 4, "c": 6}, loader)
    _, event = cache.get("a")
    assert event.cold and event.evicted == []
    cache.get("b")
    _, event = cache.get("a")  # warm: a becomes most recently used
    assert event == CacheEvent("a", cold=False, load_seconds=0.0)
    _, event = cache.get("c")  # 4 + 4 + 6 > 10: evict b (LRU), keep a
    assert event.evicted == ["b"] and cache.resident() == ["a", "c"]
    assert loads == ["a", "b", "c"]
    with pytest.raises(KeyError, match="choose one of"):
        cache.get("d")
    with pytest.raises(ModelCacheError, match="needs 11 bytes"):
        ModelCache(10, {"big": 11}, loader).get("big")
    with pytest.raises(ValueError, match="budget must be > 0"):
        ModelCache(0, {}, loader)


def test_worker_body_runs_a_task_without_ray(model_root, folders):
    """The actor's body as plain Python: one patch, PNG of the engine's image."""
    from eat.testbed.worker import EdgeWorkerImpl, ModelSource, TaskSpec, WorkerConfig

    sizes = {m: weight_file_bytes(folders[(m, "ddim")]) for m in ("sd15", "sdxl")}
    config = WorkerConfig(
        server_id=0,
        device="cpu",
        dtype="float32",
        threads=1,
        memory_budget_bytes=max(sizes.values()) + 1,
        models={m: ModelSource(None, "tiny", 3, str(model_root)) for m in sizes},
        model_bytes=sizes,
        scheduler="ddim",
        margin=2,
    )
    worker = EdgeWorkerImpl(config)
    assert worker.ping()["resident"] == []  # warm-up load evicted again
    request = GenerationRequest(PROMPT, 64, 3, 5.0, seed=9)
    result = worker.run_task(TaskSpec(7, 1, "sd15", request, (0,)), [])
    expected = generate(loaded(folders, "sd15", "ddim"), request).image
    assert result.png == png_bytes(expected)
    assert result.member_cold_start_s[0] > 0 and len(result.step_s) == 3
    again = worker.run_task(TaskSpec(8, 1, "sdxl", request, (0,)), [])
    assert again.member_evicted == (("sd15",),) and again.resident_after == {0: ["sdxl"]}


def test_cpu_workers_get_a_core_each_when_there_are_enough(params):
    import os

    from eat.testbed.bed import Resolved, cpu_cores

    cores = sorted(os.sched_getaffinity(0))
    resolved = Resolved("cpu", "tiny", "float32", params.testbed.tiny, Path("/tmp"))
    fits = params.testbed.model_copy(update={"workers": len(cores), "threads": 1})
    assert cpu_cores(fits, resolved) == [(core,) for core in cores]
    crowded = params.testbed.model_copy(update={"workers": len(cores) + 1, "threads": 1})
    assert cpu_cores(crowded, resolved) is None  # the OS schedules them
    on_gpu = Resolved("cuda", "real", "float16", params.testbed.real, Path("/tmp"))
    assert cpu_cores(fits, on_gpu) is None


def test_run_async_works_inside_a_running_event_loop():
    """The stage runs in a Jupyter kernel (papermill), whose thread already has a loop."""
    import asyncio

    from eat.testbed.bed import run_async

    async def answer() -> int:
        await asyncio.sleep(0)
        return 42

    async def inside_a_loop() -> int:
        return run_async(answer())

    assert run_async(answer()) == 42
    assert asyncio.run(inside_a_loop()) == 42
