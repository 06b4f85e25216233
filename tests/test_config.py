"""Configs: defaults, --set overrides parsed as YAML, unknown keys refused, saved and reloaded."""
from __future__ import annotations

import json

import pytest

from lesion_pl.config import load_config, read_yaml, save_config
from lesion_pl.errors import LesionPLError


def test_overrides_parse_values():
    cfg = load_config(None, ["data.image_size=64", "model.widths=[8,16]", "trainer.max_time=null",
                             "model.name=resnet18", "optim.lr=1e-3"])
    assert cfg.data.image_size == 64
    assert cfg.model.widths == [8, 16]
    assert cfg.model.name == "resnet18"
    assert cfg.optim.lr == pytest.approx(1e-3)


def test_unknown_key_is_an_error():
    with pytest.raises(LesionPLError, match="unknown config key 'data.imagesize'"):
        load_config(None, ["data.imagesize=64"])
    with pytest.raises(LesionPLError, match="key=value"):
        load_config(None, ["data.image_size"])


@pytest.mark.parametrize("override, message", [
    ("data.batch_size=0", "data.batch_size must be a whole number >= 1, got 0"),
    ("optim.lr=abc", "optim.lr must be a number > 0, got 'abc'"),
    ("trainer.precision=fp8", "trainer.precision must be one of auto, 32-true, .*got 'fp8'"),
    ("trainer.max_epochs=0", "trainer.max_epochs must be a whole number >= 1, or -1"),
    ("model.dropout=1.5", "model.dropout must be a number >= 0 and <= 1, got 1.5"),
    ("trainer.ema_decay=yes", "trainer.ema_decay must be .*or null, got True"),
    ("data.augment.scale=[2, 1]", r"data.augment.scale must be a pair \[min, max\] .*got \[2, 1\]"),
    ("data.augment.ratio=[0, 1]", r"data.augment.ratio must be a pair \[min, max\] with 0 < min <= max"),
    ("loss.class_weights=weird", "loss.class_weights must be one of none, shuffle, sqrt, balanced or a power"),
    ("calibration.decision=foo", "calibration.decision must be one of balanced, accuracy, got 'foo'"),
    ("trainer.devices=abc", "trainer.devices must be a number of devices.*got 'abc'"),
    ("trainer.max_time=soon", r'trainer.max_time must be a wall-clock limit "DD:HH:MM:SS".*got \'soon\''),
    ("data.augment.jpeg=[0, 90]", r"data.augment.jpeg must be a pair \[min, max\] of JPEG qualities"),
])
def test_a_bad_value_is_named_with_what_the_key_takes(override, message):
    """Values that torch or Lightning would refuse deep inside `fit`, with a traceback."""
    with pytest.raises(LesionPLError, match=message):
        load_config(None, [override])


def test_a_bad_value_in_a_config_file_is_refused_before_anything_runs(tmp_path):
    from .conftest import invoke

    (tmp_path / "c.yaml").write_text("optim:\n  weight_decay: -1\n")
    r = invoke("fit", "--config", tmp_path / "c.yaml", "--out", tmp_path / "run")
    assert r.exit_code == 2 and "optim.weight_decay must be a number >= 0, got -1" in r.output, r.output
    assert not (tmp_path / "run").exists()


def test_settings_lightning_refuses_are_one_line_before_anything_is_written(small_ham, tmp_path):
    from .conftest import invoke

    for setting, said in (("trainer.strategy=no_such_strategy", "invalid strategy name"),
                          ("trainer.accelerator=tpu", "trainer.accelerator=tpu")):
        r = invoke("fit", "--data-root", small_ham, "--out", tmp_path / "run", "--quiet", "--set", setting)
        assert r.exit_code == 2 and "Lightning refused" in r.output and said in r.output, r.output
        assert not (tmp_path / "run").exists()


def test_user_file_over_defaults_and_roundtrip(tmp_path):
    (tmp_path / "c.yaml").write_text("data:\n  batch_size: 8\n")
    cfg = load_config(tmp_path / "c.yaml")
    assert cfg.data.batch_size == 8 and cfg.data.image_size == "auto"
    save_config(cfg, tmp_path / "out.yaml")
    assert read_yaml(tmp_path / "out.yaml") == cfg.model_dump() and load_config(tmp_path / "out.yaml") == cfg


def test_cli_and_package_import_without_torch():
    """`import lesion_pl` and `cli.py --help` stay fast: neither loads torch, Lightning or matplotlib."""
    import subprocess
    import sys

    from .conftest import PROJECT

    code = ("import sys, lesion_pl, cli; heavy = [m for m in ('torch', 'pytorch_lightning', 'matplotlib') "
            "if m in sys.modules]; print(heavy); assert not heavy")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PROJECT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = subprocess.run([sys.executable, "cli.py", "--help"], capture_output=True, text=True, cwd=PROJECT)
    assert proc.returncode == 0 and "fit" in proc.stdout and "export" in proc.stdout


@pytest.mark.parametrize("avx512_bf16, amx, faster, expected", [
    (True, False, "bf16-mixed", "bf16-mixed"), (False, True, "bf16-mixed", "bf16-mixed"),
    (True, True, "32-true", "32-true"), (False, False, "bf16-mixed", "32-true")])
def test_auto_precision_on_the_cpu_follows_its_bf16_support_and_speed(monkeypatch, avx512_bf16, amx, faster, expected):
    import torch

    from lesion_pl import hardware
    from lesion_pl.hardware import precision_for

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    timed = []
    monkeypatch.setattr(hardware, "faster_on_cpu", lambda *a: timed.append(a) or faster)
    cfg = load_config(None, [])
    assert cfg.trainer.precision == "auto"
    assert precision_for(cfg) == expected
    assert len(timed) == (1 if avx512_bf16 or amx else 0)  # only a bf16 CPU is timed
    if timed:  # the default network at the size auto would train at, a batch of at most 32
        assert json.loads(timed[0][0])["name"] == cfg.model.name and timed[0][1:] == (128, 32, True)
    # several processes (DDP on the CPU) do not each time the CPU they share
    assert precision_for(load_config(None, ["trainer.devices=2"])) == ("bf16-mixed" if timed else "32-true")
    # a precision set by hand is kept, whatever the CPU
    assert precision_for(load_config(None, ["trainer.precision=32-true"])) == "32-true"


@pytest.mark.parametrize("bf16, fp32, expected", [(111.0, 100.0, "bf16-mixed"), (160.0, 100.0, "bf16-mixed"),
                                                   (109.0, 100.0, "32-true"), (50.0, 100.0, "32-true")])
def test_bf16_is_chosen_only_where_it_is_a_tenth_faster(bf16, fp32, expected):
    from lesion_pl.hardware import choose_precision

    assert choose_precision({"bf16-mixed": bf16, "32-true": fp32}) == expected


def test_the_precision_probe_times_both_on_this_cpu_once(monkeypatch):
    from lesion_pl import hardware

    cfg = load_config(None, ["model.widths=[4,8,8,8]", "data.image_size=32", "data.batch_size=8"])
    args = hardware._probe(cfg)
    hardware.faster_on_cpu.cache_clear()
    judged = []
    monkeypatch.setattr(hardware, "choose_precision", lambda rates: judged.append(dict(rates)) or "32-true")
    hardware.decisions_file().unlink(missing_ok=True)
    choice = hardware.faster_on_cpu(*args)
    probe = hardware.PROBES[args]
    rates = {k: probe[k] for k in ("bf16-mixed", "32-true")}
    assert choice == "32-true" and judged == [rates]  # the rule sees what was timed, both precisions
    assert all(r > 0 for r in rates.values()) and probe["timed"]
    hardware.PROBES.pop(args)
    assert hardware.faster_on_cpu(*args) == choice and args not in hardware.PROBES  # cached: not timed again
    assert hardware.faster_on_cpu.cache_info().hits >= 1
    # another process on this machine (the in-process cache cleared) reads the kept timing: the same choice,
    # nothing timed again
    hardware.faster_on_cpu.cache_clear()
    monkeypatch.setattr(hardware, "_time_rates", lambda *a: pytest.fail("timed again"))
    assert hardware.faster_on_cpu(*args) == choice and judged[-1] == rates
    kept = json.loads(hardware.decisions_file().read_text())
    assert list(kept.values()) == [{"rates": rates, "timed": probe["timed"]}]
    assert hardware.machine_key() in next(iter(kept))  # kept for this CPU, torch and thread count only


def test_auto_precision_without_torchs_cpu_checks(monkeypatch):
    # the checks are private torch API: a torch without them trains in fp32 rather than failing
    import torch

    from lesion_pl.hardware import precision_for

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")
    assert precision_for(load_config(None, [])) == "32-true"


@pytest.mark.parametrize("bf16_cpu, cuda, precision, expected", [
    (True, False, "auto", 128), (False, False, "auto", 64), (False, True, "auto", 128),
    (True, False, "32-true", 64), (False, False, "bf16-mixed", 128)])
def test_auto_image_size_follows_the_training_precision(monkeypatch, bf16_cpu, cuda, precision, expected):
    import torch

    from lesion_pl import hardware

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(hardware, "cpu_has_bf16", lambda: bf16_cpu)
    monkeypatch.setattr(hardware, "faster_on_cpu", lambda *a: "bf16-mixed")  # where bf16 is the faster one
    cfg = load_config(None, [f"trainer.precision={precision}"])
    assert hardware.image_size_for(cfg) == expected
    resolved = hardware.resolve_auto(cfg)
    assert resolved.data.image_size == expected and cfg.data.image_size == "auto"
    # a size set by hand is kept, whatever the hardware
    assert hardware.image_size_for(load_config(None, ["data.image_size=96", f"trainer.precision={precision}"])) == 96


@pytest.mark.parametrize("size", ["big", 0, 12.5, "128px"])
def test_a_bad_image_size_is_named(size):
    from lesion_pl.hardware import image_size_for

    with pytest.raises(LesionPLError, match=f"data.image_size must be auto or a whole number.*{size!r}"):
        image_size_for(load_config(None, [f"data.image_size={size}"]))


def test_an_older_config_gets_the_defaults_it_lacks():
    """A checkpoint's config from an older lesion-pl, through the same models: each missing key its default, the
    rest kept."""
    from lesion_pl.config import config_from

    values = load_config().model_dump()
    del values["data"]["color_constancy"], values["calibration"]["prior_correction"]
    values["trainer"]["channels_last"] = False
    filled = config_from(values)
    assert filled.data.color_constancy is None and filled.calibration.prior_correction is True
    assert filled.trainer.channels_last is False  # what the old config said stays
    with pytest.raises(LesionPLError, match="unknown config key 'data.colour'"):
        config_from({"data": {"colour": 1}})


def test_the_documented_default_is_the_models_defaults_and_every_key_has_a_rule_and_a_doc():
    """configs/ham10000.yaml documents the defaults; they live in the typed models (lesion_pl/config/models.py),
    where each key also has its rule (what it takes) and a one-line doc."""
    from pydantic import BaseModel

    from lesion_pl.config import DOCUMENTED_DEFAULT, FORMATS, Config, read_yaml
    from lesion_pl.data.sources import READERS

    assert read_yaml(DOCUMENTED_DEFAULT) == Config().model_dump()

    def fields(model, prefix=""):
        for name, info in model.model_fields.items():
            sub = info.annotation if isinstance(info.annotation, type) else None
            if sub is not None and issubclass(sub, BaseModel):
                yield from fields(sub, prefix + name + ".")
            else:
                yield prefix + name, info
    found = dict(fields(Config))
    assert len(found) > 80
    unruled = [k for k, info in found.items() if not any(type(m).__name__ == "BeforeValidator" for m in info.metadata)]
    assert unruled == [], unruled
    assert [k for k, info in found.items() if not info.description] == []
    assert set(FORMATS) == {"auto", *READERS}
    with pytest.raises(LesionPLError, match="data.format must be one of auto, ham10000"):
        load_config(None, ["data.format=excel"])
    with pytest.raises(LesionPLError, match="calibration.tta must be true or false, got 'yes please'"):
        load_config(None, ["calibration.tta=yes please"])


def test_a_free_form_mapping_takes_any_keys_and_a_section_only_its_own():
    """data.label_map and data.where default to {}: `--set` gives them whatever keys the data needs (as the README
    shows), while a section (data.columns) still refuses a key it does not have."""
    cfg = load_config(None, ["data.label_map={nevus: nv, SCC: akiec}", "data.where={split: val}"])
    assert cfg.data.label_map == {"nevus": "nv", "SCC": "akiec"} and cfg.data.where == {"split": "val"}
    columns = load_config(None, ["data.columns={image: file}"]).data.columns
    assert columns.model_dump() == {"image": "file", "label": "label", "group": None}
    with pytest.raises(LesionPLError, match="unknown config key 'data.columns.site'"):
        load_config(None, ["data.columns={site: x}"])
    with pytest.raises(LesionPLError, match="data.where must be a mapping of column names"):
        load_config(None, ["data.where={split: [val, {a: b}]}"])
