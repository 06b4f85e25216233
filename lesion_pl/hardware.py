"""What `auto` means on this machine: the training precision and the input size."""
from __future__ import annotations

import contextlib
import functools
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import Config, Model

PROBE_SIZE = 128  # px: the size `data.image_size: auto` trains at where bf16 is chosen


def precision_for(cfg: Config) -> str:
    """Lightning's precision for `trainer.precision`.

    "auto": bf16-mixed on CUDA; on a CPU that multiplies bf16 in hardware (AVX-512 bf16, AMX), whichever
    of bf16-mixed and 32-true trains this network faster there (`faster_on_cpu`, timed once per machine and kept):
    bf16 was 1.6x faster for LesionCNN on an AMD EPYC with AVX-512 bf16 (at no cost on validation) and 2.9x
    on an Intel Xeon with AMX, but 1.7x slower for EfficientNet-Lite0 on that Xeon (benchmarks/RESULTS.md:
    "bf16 on a CPU that has it", "A longer fine-tune"); 32-true on other CPUs, where bf16 autocast is ~12x
    slower (benchmarks/step_speed.py).
    """
    import torch

    p = cfg.trainer.precision
    if p != "auto":
        return str(p)
    if torch.cuda.is_available() and cfg.trainer.accelerator != "cpu":
        return "bf16-mixed"
    if not cpu_has_bf16():
        return "32-true"
    t = cfg.trainer
    if str(t.devices) != "1" or int(t.num_nodes) > 1:
        return "bf16-mixed"  # several processes would each time the CPU they share, and might disagree
    return faster_on_cpu(*_probe(cfg))


def _probe(cfg: Config) -> tuple:
    """What `faster_on_cpu` times for this config: the network, the size, a batch, the memory layout."""
    size = cfg.data.image_size
    return (_network_key(cfg.model), PROBE_SIZE if size == "auto" else int(size),
            min(int(cfg.data.batch_size), 32), bool(cfg.trainer.channels_last))


def probed_rates(cfg: Config) -> dict | None:
    """Images/s per precision where `precision_for(cfg)` timed them in this process, else None."""
    return PROBES.get(_probe(cfg))


def _network_key(model: Model) -> str:
    """The network's architecture as a hashable key (its weights do not change its speed)."""
    import json

    return json.dumps(model.model_dump(exclude={"pretrained", "weights", "normalization"}),
                      sort_keys=True)


@functools.cache
def faster_on_cpu(network: str, size: int, batch: int, channels_last: bool) -> str:
    """`choose_precision` of this network's training speed in fp32 and in bf16 autocast on this CPU's threads.

    A few noisy steps once decided the precision, and with it the input size and the model (issue #42: two fits
    minutes apart chose differently). So the rates are timed in interleaved rounds (`timed_rates`), and kept per
    machine, so every later fit on this machine chooses the same.
    """
    return choose_precision(timed_rates(network, size, batch, channels_last, ("32-true", "bf16-mixed")))


def training_rates(cfg: Config, sizes, precision: str) -> dict[int, float]:
    """Images/s that `cfg`'s network trains at, at each of `sizes` in `precision`, on the device `fit` uses (timed
    once per machine and kept): what `trainer.budget` plans with."""
    network, _, batch, channels_last = _probe(cfg)
    device = "cuda" if _trains_on_cuda(cfg) else "cpu"
    return {int(s): timed_rates(network, int(s), batch, channels_last, (precision,), device)[precision]
            for s in sizes}


def _trains_on_cuda(cfg: Config) -> bool:
    import torch

    return torch.cuda.is_available() and cfg.trainer.accelerator != "cpu"


def timed_rates(network: str, size: int, batch: int, channels_last: bool, precisions: tuple,
                device: str = "cpu", steps: int = 2, rounds: int = 3) -> dict:
    """Images/s of a training step per precision: timed in `rounds` interleaved rounds of `steps` steps each (after
    a warm-up), the best round of each counting, and kept per machine (`decisions_file`: the CPU or GPU, torch, the
    threads and what was timed), so that a later fit reads them rather than timing again."""
    import json

    key = json.dumps([machine_key(device), network, size, batch, channels_last])
    stored = _decisions().get(key) or {"rates": {}, "timed": None}
    missing = [p for p in precisions if p not in stored["rates"]]
    if missing:
        stored = {"rates": {**stored["rates"],
                            **_time_rates(network, size, batch, channels_last, missing, device, steps, rounds)},
                  "timed": time.strftime("%Y-%m-%d %H:%M")}
        _remember(key, stored)
    PROBES[(network, size, batch, channels_last)] = {**stored["rates"], "timed": stored["timed"]}
    return stored["rates"]


def _time_rates(network: str, size: int, batch: int, channels_last: bool, precisions, device: str, steps: int,
                rounds: int) -> dict:
    import json

    import torch

    from .classes import NUM_CLASSES
    from .config import Model
    from .models import build_network

    model = Model(**json.loads(network))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, size, size, generator=g).to(device)
    y = torch.randint(0, NUM_CLASSES, (batch,), generator=g).to(device)
    setups = {}
    for precision in precisions:
        with torch.random.fork_rng():  # the networks' random initialisation leaves fit's seeding alone
            net = build_network(model).to(device).train()
        xs = x
        if channels_last:
            net, xs = net.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
        setups[precision] = (net, xs, torch.optim.AdamW(net.parameters(), 1e-3, fused=True))

    def step(precision: str) -> None:
        net, xs, opt = setups[precision]
        with torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16-mixed"):
            loss = torch.nn.functional.cross_entropy(net(xs), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()

    rates = {p: 0.0 for p in setups}
    for precision in setups:
        step(precision)  # warm-up
    for _ in range(rounds):  # interleaved: a slow moment of the machine hits both
        for precision in setups:
            start = time.perf_counter()
            for _ in range(steps):
                step(precision)
            rates[precision] = max(rates[precision], steps * batch / (time.perf_counter() - start))
    return rates


def machine_key(device: str = "cpu") -> str:
    """What makes a timing hold: this CPU's model (or the GPU's), torch's version, the threads it trains on."""
    import platform

    import torch

    if device == "cuda":
        return f"{torch.cuda.get_device_name()} | torch {torch.__version__}"

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError, StopIteration):  # Linux names the model; elsewhere the platform's word
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    return f"{cpu} | torch {torch.__version__} | {torch.get_num_threads()} threads"


def decisions_file() -> Path:
    """Where this machine's timings are kept: auto_precision.json in lesion-pl's cache folder ($LESION_PL_CACHE)."""
    from .data.cache import default_cache_dir

    return default_cache_dir() / "auto_precision.json"


def _decisions() -> dict:
    from .io import read_json

    return read_json(decisions_file()) or {}


def _remember(key: str, value: dict) -> None:
    from .io import atomic_write_json, file_lock

    path = decisions_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(path.with_suffix(".lock")):
            atomic_write_json(path, {**_decisions(), key: value})
    except OSError:  # a read-only cache: the choice holds for this process alone
        pass


BF16_MARGIN = 1.1  # bf16 must be this much faster than fp32 to be chosen


def choose_precision(rates: dict) -> str:
    """Images/s per precision -> the one `auto` trains in: bf16 where it is at least BF16_MARGIN times faster."""
    return "bf16-mixed" if rates["bf16-mixed"] >= BF16_MARGIN * rates["32-true"] else "32-true"


PROBES: dict = {}  # what faster_on_cpu measured, images/s per precision, for fit to print


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware."""
    return cpu_supports("_is_avx512_bf16_supported") or cpu_supports("_is_amx_tile_supported")


def cpu_supports(check: str) -> bool:
    """One of torch's own CPU checks, e.g. "_is_vnni_supported": private API, so a torch without it says False."""
    import torch

    return bool(getattr(torch.cpu, check, lambda: False)())


def image_size_for(cfg: Config) -> int:
    """`data.image_size` in pixels; "auto": 128 where training runs in bf16, else 64.

    bf16 makes 128 px affordable in the hour, and 128 px scored higher on validation over three seeds
    (benchmarks/RESULTS.md: "Should the default follow the hardware?").
    """
    size = cfg.data.image_size
    if size == "auto":
        return 128 if precision_for(cfg).startswith("bf16") else 64
    return int(size)


def resolve_auto(cfg: Config) -> Config:
    """A copy of `cfg` with `data.image_size` as pixels and `trainer.precision` as Lightning's name, chosen
    together (the size follows the precision), so that a saved run names what it trained with."""
    if "auto" not in (cfg.data.image_size, cfg.trainer.precision):
        return cfg
    out = cfg.model_copy(deep=True)
    out.data.image_size = image_size_for(cfg)
    out.trainer.precision = precision_for(cfg)
    return out
