"""The three-stage schedule, staged unfreezing, partial loading and the online CLIP blocks."""

import pytest
import torch

from bifusion_core.config import load_preset
from bifusion_core.data.labels import LABEL_SETS
from bifusion_core.engine.checkpoint import save_checkpoint
from bifusion_core.engine.partial_load import load_init_weights, partial_load
from bifusion_core.engine.unfreeze import apply_stage
from bifusion_core.errors import BifusionError, ConfigError
from bifusion_core.features.clip_encoder import load_clip_encoder
from bifusion_core.losses.stages import stage_index, stage_progress
from bifusion_core.models.bifusion import build_model
from bifusion_core.models.clip_tail import ClipTail

LABELS = LABEL_SETS["scannet200"]
TINY = [
    "model.backbone3d.arch=MinkUNetTiny",
    "model.feat_dim=32",
    "model.head2d_hidden=32",
    "model.decoder.num_heads=4",
    "model.decoder.ffn_dim=32",
    "model.tiny_sa.num_heads=4",
    "model.tiny_sa.ffn_dim=32",
]


def test_stage_weights_at_the_boundaries():
    stages = load_preset("bif-sv-advanced").loss.stages
    at = {p: stage_index(stages, p) for p in (0.0, 0.2999, 0.3, 0.6999, 0.7, 0.99, 1.0)}
    assert at == {0.0: 0, 0.2999: 0, 0.3: 1, 0.6999: 1, 0.7: 2, 0.99: 2, 1.0: 2}
    table = [(s.semantic, s.instance, s.clip, s.aux) for s in stages]
    assert table == [(0.3, 0.4, 0.2, 0.1), (0.4, 0.5, 0.08, 0.02), (0.45, 0.5, 0.04, 0.01)]
    assert stage_index(stages, stage_progress(300, 1000)) == 1
    assert [s.clip for s in load_preset("bif-sv-simple").loss.stages] == [0.02, 0.02, 0.02]


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("loss.stages=[{until: 0.5, semantic: 1, instance: 1, clip: 0, aux: 0}]", "last must be 1.0"),
        (
            "loss.stages=[{until: 0.5, semantic: 1, instance: 1, clip: 0, aux: 0}, "
            "{until: 0.4, semantic: 1, instance: 1, clip: 0, aux: 0}]",
            "increase strictly",
        ),
        ("train.unfreeze.clip_blocks=3", "exceeds the 2 CLIP blocks"),
        ("train.unfreeze.s1=[decoder]", "train.unfreeze.s1.0"),
        ("optim.lr_mult={clip_tale: 0.1}", "unknown prefix 'clip_tale'"),
    ],
)
def test_schedule_config_errors_are_one_line(override, fragment):
    with pytest.raises(ConfigError) as info:
        load_preset("demo", [override])
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_unfreezing_clip_blocks_needs_a_2d_branch():
    with pytest.raises(ConfigError, match="needs a 2D branch"):
        load_preset("3d-sv", ["train.unfreeze.clip_blocks=1"])
    assert load_preset("demo", ["train.unfreeze.clip_blocks=1"]).train.unfreeze.clip_blocks == 1


def test_staged_unfreezing_on_a_real_model():
    cfg = load_preset("bif-sv-advanced", TINY)
    model = build_model(cfg, LABELS).train()

    def trains(name):
        return all(p.requires_grad for p in model.get_submodule(name).parameters())

    assert apply_stage(model, cfg.train.unfreeze, 0) == ["head2d", "head3d"]
    assert trains("head2d") and trains("backbone3d.head") and trains("decoder") and trains("pool")
    assert not any(trains(n) for n in ("backbone3d.unet", "film", "gate", "tiny_sa"))
    assert not model.backbone3d.unet.stem[1].training  # frozen BatchNorm keeps its statistics
    model.train()
    assert not model.backbone3d.unet.stem[1].training and model.backbone3d.head[1].training
    apply_stage(model, cfg.train.unfreeze, 1)
    assert all(trains(n) for n in ("backbone3d", "film", "gate", "tiny_sa"))
    assert model.backbone3d.unet.stem[1].training and model.frozen == []
    three_d = build_model(load_preset("3d-sv", TINY), LABELS)
    assert apply_stage(three_d, load_preset("3d-sv").train.unfreeze, 0) == ["backbone3d"]


def test_partial_load_with_renamed_prefix(tmp_path):
    source = build_model(load_preset("3d-sv", TINY), LABELS)
    renamed = {k.replace("backbone3d.", "backbone."): v for k, v in source.state_dict().items()}
    target = build_model(load_preset("bif-sv-simple", TINY), LABELS)
    report = partial_load(target, renamed, "backbone3d", prefix_replace=("backbone.", ""), source="3d run")
    assert report.ok and len(report.loaded) == len(target.backbone3d.state_dict())
    for key, value in target.backbone3d.state_dict().items():
        torch.testing.assert_close(value, source.backbone3d.state_dict()[key])
    # without the prefix fix nothing matches: every key is reported missing, none loaded
    report = partial_load(target, renamed, "backbone3d")
    assert not report.loaded and len(report.missing) == len(target.backbone3d.state_dict())
    # a wider head: matched by name, rejected by shape, listed
    wide = dict(source.state_dict())
    wide["backbone3d.head.0.kernel"] = torch.zeros(1, 999, 32)
    report = partial_load(target, wide, "backbone3d")
    assert [k for k, _, _ in report.mismatched] == ["head.0.kernel"] and "head.0.kernel" not in report.loaded
    with pytest.raises(BifusionError, match="1 shape-mismatched"):
        partial_load(target, wide, "backbone3d", strict=True)
    extra = {**source.state_dict(), "backbone3d.extra.weight": torch.zeros(3)}
    assert partial_load(target, extra, "backbone3d").unexpected == ["extra.weight"]


def test_init_from_a_run_folder(tmp_path):
    three_d = load_preset("3dtsa-sv", TINY)
    source = build_model(three_d, LABELS)
    save_checkpoint(
        tmp_path / "run" / "checkpoints" / "best.pt", {"model": source.state_dict(), "config": three_d.model_dump(mode="json")}
    )
    cfg = load_preset("bif-sv-simple", TINY + [f"train.init.checkpoint={tmp_path / 'run'}"])
    model = build_model(cfg, LABELS)
    reports = load_init_weights(model, cfg.train.init)
    assert [r.submodule for r in reports] == ["backbone3d", "tiny_sa"]
    assert reports[0].ok and reports[1].absent  # bif-sv-simple builds no Tiny-SA
    torch.testing.assert_close(model.backbone3d.head[0].kernel, source.backbone3d.head[0].kernel)


def test_online_clip_blocks_continue_the_stored_tokens():
    images = torch.randn(2, 3, 32, 48)
    full, _ = load_clip_encoder(2, None)
    stored, _ = load_clip_encoder(1, None)
    tail = ClipTail(num_layers=2, num_blocks=1)
    with torch.no_grad():
        expected, _ = full(images)
        patch, global_token = stored(images)
        torch.testing.assert_close(tail(patch, global_token), expected, atol=1e-4, rtol=1e-4)
    assert not any(p.requires_grad for p in tail.parameters())


def test_clip_blocks_train_only_in_s2_at_a_tenth_of_the_rate():
    from bifusion_core.engine.optimizer import parameter_groups

    cfg = load_preset("demo", TINY + ["train.unfreeze.clip_blocks=1"])
    model = build_model(cfg, LABELS)
    assert len(model.clip_tail.blocks) == 1
    for stage, trains in ((0, False), (1, False), (2, True)):
        groups = apply_stage(model, cfg.train.unfreeze, stage)
        assert all(p.requires_grad == trains for p in model.clip_tail.parameters())
        assert ("clip_tail" in groups) == trains
    tail_ids = {id(p) for p in model.clip_tail.parameters()}
    for group in parameter_groups(model, 0.01, 1e-3, cfg.optim.lr_mult):
        if {id(p) for p in group["params"]} & tail_ids:
            assert group["lr"] == pytest.approx(1e-4)
