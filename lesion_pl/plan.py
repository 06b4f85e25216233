"""`trainer.budget`: the input size and training time that fit a wall-clock budget for `fit` on this machine.

The rule and the measurements behind `MEASURED` and the overheads: benchmarks/RESULTS.md, "A time budget".
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from .errors import LesionPLError

if TYPE_CHECKING:
    from .config import Config

SIZES = (64, 96, 128)  # px: the sizes a budget chooses among (those measured)
MEASURED_NETWORK = "lesion_cnn"  # the network the table was measured with: the size is planned for it alone
# size -> [(epochs the schedule was annealed to, calibrated validation balanced accuracy)], epochs ascending
MEASURED: dict[int, list[tuple[int, float]]] = {
    64: [(32, 0.685), (75, 0.698)],
    96: [(16, 0.688)],
    128: [(10, 0.653), (60, 0.714)],  # 60 epochs: the 64 px point + the 128 px three-seed gain at full length
}
MARGIN = 0.01  # a larger size must predict this much more than the best smaller one (about the seed spread)
EPOCH_OVERHEAD = 1.0  # an epoch's measured seconds over (training + validation images) / timed training rate
CALIBRATION_OVERHEAD = 1.9  # calibration's measured seconds over its forward passes / (timed rate / FORWARD_COST)
FORWARD_COST = 1 / 3  # a forward pass alone costs about a third of a training step
RESERVE_S = 20.0  # building the trainer and the model, the last checkpoint: seconds kept out of training


def predicted(size: int, epochs: float) -> float | None:
    """The validation balanced accuracy `size` px reaches with its schedule annealed to `epochs`: linear in log
    epochs between measured points, flat beyond the last; None below the first (never measured, never promised)."""
    points = MEASURED.get(size) or []
    if not points or epochs < points[0][0]:
        return None
    for (e0, a0), (e1, a1) in zip(points, points[1:], strict=False):
        if epochs <= e1:
            return a0 + (a1 - a0) * math.log(epochs / e0) / math.log(e1 / e0)
    return points[-1][1]


def epoch_images(train: int, val: int, batch_size: int, limit_train: float = 1.0,
                 limit_val: float = 1.0) -> tuple[int, int]:
    """The images an epoch trains on and validates on, as `fit` runs it: whole batches only in training (the last
    partial one is dropped), and Lightning's limit_*_batches (a share, or a count of batches)."""
    batches = train // batch_size
    batches = int(batches * limit_train) if limit_train <= 1 else min(batches, int(limit_train))
    val = int(val * limit_val) if limit_val <= 1 else min(val, int(limit_val) * batch_size)
    return batches * batch_size, val


def epoch_seconds(rate: float, train_images: int, val_images: int) -> float:
    """An epoch's expected wall clock: training and validation at `rate` timed training images/s."""
    return EPOCH_OVERHEAD * (train_images + FORWARD_COST * val_images) / rate


def calibration_seconds(rate: float, val_images: int, views: int, members: int) -> float:
    """Calibration's expected wall clock after training: every member scores each validation view."""
    return CALIBRATION_OVERHEAD * FORWARD_COST * val_images * views * members / rate


@dataclass(frozen=True)
class Option:
    size: int
    seconds_per_epoch: float
    epochs: float  # per member, within the budget (and trainer.max_epochs)
    predicted: float | None


@dataclass(frozen=True)
class Plan:
    """What `fit` trains within `budget_s`: its size and precision, and how long it trains."""
    budget_s: float
    size: int
    precision: str
    calibration_s: float  # kept out of training for calibration
    options: tuple[Option, ...]
    why: str

    def applied(self, cfg: Config) -> Config:
        """A copy of `cfg` with the plan's size and precision, and no budget: the run's saved config trains the same
        on its own (fit sets trainer.max_time, the training time, once the images are cached)."""
        out = cfg.model_copy(deep=True)
        out.data.image_size = self.size
        out.trainer.precision = self.precision
        out.trainer.budget = None
        return out

    @property
    def chosen(self) -> Option:
        return next(o for o in self.options if o.size == self.size)

    def training_seconds(self, started: float, now: float | None = None) -> float:
        """The training time left when training starts at `now`, `fit` having started at `started`."""
        return self.budget_s - ((now or time.time()) - started) - self.calibration_s - RESERVE_S

    def line(self) -> str:
        o = self.chosen

        def shown(x: Option) -> str:
            guess = "not measured this short" if x.predicted is None else f"{x.predicted:.3f}"
            return f"{x.size} px {guess} ({x.epochs:.0f} epochs)"
        return (f"plan for trainer.budget {_clock(self.budget_s)}: {self.size} px in {self.precision}, about "
                f"{o.epochs:.0f} epochs at ~{o.seconds_per_epoch:.0f} s ({self.why})"
                + (f"; predicted validation balanced accuracy: {', '.join(shown(x) for x in self.options)}"
                   if len(self.options) > 1 else ""))

    def as_dict(self) -> dict:
        return {"budget": _clock(self.budget_s), "budget_s": self.budget_s, "image_size": self.size,
                "precision": self.precision, "calibration_s": round(self.calibration_s, 1), "why": self.why,
                "options": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(o).items()}
                            for o in self.options]}


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 86400:02d}:{s // 3600 % 24:02d}:{s // 60 % 60:02d}:{s % 60:02d}"


def choose(options: list[Option]) -> tuple[Option, str]:
    """The plan rule: the size with the highest prediction, a larger size needing more than MARGIN above the best
    smaller one; where no size has a prediction (the budget buys fewer epochs than any measured), the smallest."""
    scored = [o for o in options if o.predicted is not None]
    if not scored:
        return (min(options, key=lambda o: o.size),
                "fewer epochs than any measured plan: the smallest size trains the most")
    pool = scored
    while True:
        top = max(pool, key=lambda o: o.predicted or 0.0)
        smaller = [o for o in pool if o.size < top.size]
        if not smaller or (top.predicted or 0.0) > max(o.predicted or 0.0 for o in smaller) + MARGIN:
            break
        pool = smaller
    best = max(scored, key=lambda o: o.predicted or 0.0)
    return top, ("the highest predicted validation balanced accuracy" if top is best else
                 f"{best.size} px predicts no more than {MARGIN} above it")


def plan_budget(cfg: Config, started: float, train_images: int, val_images: int, uncached) -> Plan:
    """The plan for `cfg.trainer.budget`. `uncached(size)`: seconds to cache the images at `size` (0 where they are
    cached). The precision is `auto`'s (or the config's); the size is the rule's where `data.image_size` is auto,
    else the config's (the plan then only sets the training time)."""
    from .config import duration_seconds
    from .hardware import precision_for, training_rates

    t = cfg.trainer
    budget = float(duration_seconds(t.budget, "trainer.budget") or 0)
    if t.max_time is not None:
        raise LesionPLError(f"trainer.budget ({t.budget}) and trainer.max_time ({t.max_time}) are both set: the "
                            "budget sets the training time itself; set one of them")
    if str(t.devices) != "1" or int(t.num_nodes) > 1:
        raise LesionPLError("trainer.budget plans for one process; with several devices or machines set "
                            "trainer.max_time (the training time) instead")
    if cfg.data.image_size == "auto" and cfg.model.name != MEASURED_NETWORK:
        raise LesionPLError(f"trainer.budget plans the input size from {MEASURED_NETWORK}'s measurements, not "
                            f"{cfg.model.name}'s: set data.image_size, and the budget sets the training time")
    precision = precision_for(cfg)
    sizes = SIZES if cfg.data.image_size == "auto" else (int(cfg.data.image_size),)
    rates = training_rates(cfg, sizes, precision)
    members = int(t.members)
    views = 8 if cfg.calibration.tta else 1
    cap = math.inf if int(t.max_epochs) == -1 else int(t.max_epochs)
    used = time.time() - started
    options, calibration, before = [], {}, {}
    for s in sizes:
        calibration[s] = calibration_seconds(rates[s], val_images, views, members)
        before[s] = used + uncached(s) + calibration[s] + RESERVE_S  # the budget's seconds that do not train
        per_epoch = epoch_seconds(rates[s], train_images, val_images)
        epochs = min(cap, max(0.0, budget - before[s]) / members / per_epoch)
        options.append(Option(s, per_epoch, epochs, predicted(s, epochs)))
    best, why = choose(options)
    if best.epochs < 1:
        least = before[best.size] + best.seconds_per_epoch * members
        raise LesionPLError(f"trainer.budget {_clock(budget)} leaves no time for one epoch at {best.size} px on this "
                            f"machine (~{best.seconds_per_epoch:.0f} s an epoch after {before[best.size]:.0f} s of "
                            f"set-up, caching and calibration): give at least {_clock(least)}")
    if len(sizes) == 1:
        why = "data.image_size set in the config"
    return Plan(budget, best.size, precision, calibration[best.size], tuple(options), why)
