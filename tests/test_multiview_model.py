"""The MV preset path: ``data.mode: mv`` builds PreparedSequences, and the model takes T frames per sample."""

import pytest
import torch

from bifusion_core.config import load_preset
from bifusion_core.data.loading.batch import collate
from bifusion_core.data.loading.sequences import PreparedSequences
from bifusion_core.data.prepare.pipeline import prepare_scannet
from bifusion_core.data.synthetic.room import SyntheticOptions
from bifusion_core.data.synthetic.write import write_synthetic_scannet
from bifusion_core.engine import builders
from bifusion_core.losses.criterion import Criterion
from bifusion_core.models.bifusion import build_model

IMAGE_SIZE = (96, 64)


@pytest.fixture(scope="module")
def mv_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("mv-model")
    write_synthetic_scannet(root, 2, seed=2, options=SyntheticOptions(num_frames=4))
    prepare_scannet(root, root, mode="mv", mv_frame_step=20, image_size=IMAGE_SIZE, num_points=1024)
    return root


def clip_stand_ins(item):
    """Stored CLIP tokens stand-ins (the model only needs their shape) on a window item or its frames."""
    for s in item if isinstance(item, list) else [item]:
        s["clip_patch"] = torch.randn(len(s["world_to_camera"]), 768, IMAGE_SIZE[1] // 16, IMAGE_SIZE[0] // 16)
        s["clip_global"] = torch.randn(len(s["world_to_camera"]), 768)
    return item


def mv_preset(mv_root, *extra):
    return load_preset(
        "bif-mv",
        [
            f"data.root={mv_root}",
            "data.num_frames=3",
            "data.image_size=[96, 64]",
            "data.voxel_size=0.08",
            "model.backbone3d.arch=MinkUNetTiny",
            "model.feat_dim=32",
            "model.head2d_hidden=32",
            "model.decoder.num_heads=4",
            "model.decoder.ffn_dim=32",
            "model.tiny_sa.num_heads=4",
            "model.tiny_sa.ffn_dim=32",
            "model.fusion.warmup_iters=0",
            *extra,
        ],
    )


def train_step(cfg, batch):
    torch.manual_seed(0)
    model = build_model(cfg, builders.label_set(cfg)).train()
    out = model(batch)
    loss, terms = Criterion(cfg.loss, builders.label_set(cfg).num_instance)(out, batch)
    loss.backward()
    assert torch.isfinite(loss) and terms["clip_align"] > 0
    assert model.head2d.net[-1].weight.grad.abs().sum() > 0
    assert model.film.mlp[-1].weight.grad.abs().sum() > 0
    assert out.semantic_logits.shape[0] == batch.points.shape[0]
    return model, out, terms


def test_mv_preset_decodes_each_frame_of_a_window_as_streaming_does(mv_root):
    cfg = mv_preset(mv_root)
    assert cfg.data.mode == "mv" and cfg.data.mv_decode == "frame"
    ds = builders.build_dataset(cfg, mv_root, None, train=True)
    assert isinstance(ds, PreparedSequences)
    items = [clip_stand_ins(ds[0]), clip_stand_ins(ds[1])]
    assert all(isinstance(item, list) and len(item) == 3 for item in items)
    batch = collate(items)
    assert batch.num_samples == 6 and batch.num_frames == 6 and batch.num_windows == 2
    assert batch.sample_window == (0, 0, 0, 1, 1, 1) and batch.frame_window.tolist() == [0, 0, 0, 1, 1, 1]
    assert batch.vox_coords[:, 0].unique().tolist() == list(range(6))  # the 3D network sees each frame alone
    model, out, terms = train_step(cfg, batch)
    assert out.valid.float().mean() > 0.5
    assert out.stats["projection/views_mean"] > 1.2  # 2D features still come from the whole window
    assert len(out.decoder) == 6 and terms["merge"] > 0  # frames of a window pair up in the merge loss


def test_mv_window_decoding_runs_the_window_as_one_sample(mv_root):
    cfg = mv_preset(mv_root, "data.mv_decode=window")
    ds = builders.build_dataset(cfg, mv_root, None, train=True)
    batch = collate([clip_stand_ins(ds[0]), clip_stand_ins(ds[1])])
    assert batch.num_samples == 2 and batch.num_frames == 6 and batch.num_windows == 2
    assert batch.frame_batch.tolist() == [0, 0, 0, 1, 1, 1]
    _, out, terms = train_step(cfg, batch)
    assert len(out.decoder) == 2 and torch.isfinite(terms["merge"])
