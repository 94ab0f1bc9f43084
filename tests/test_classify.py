"""Reading a clip's class off the generative model (mfvideo.method.classify), and the pipeline's infer_label."""

import numpy as np
import pytest
import torch

from mfvideo.method import class_errors, infer_class


class PrototypeFlow:
    """The exact velocity field of class c if class c were a point mass at prototype P_c: with
    z = (1 - t) x + t e, v = (z - P_c) / t. Its squared error against the true v = (z - x) / t is |x - P_c|^2 / t^2,
    so the class of least error is the nearest prototype, whatever the noise."""

    def __init__(self, prototypes):
        self.p = prototypes  # (K, C, T, H, W)

    def __call__(self, z, t, r, y=None):
        return (z - self.p[y]) / t.view(-1, 1, 1, 1, 1)


def test_class_errors_are_the_prototype_distances_and_the_argmin_is_the_nearest():
    g = torch.Generator().manual_seed(0)
    protos = torch.randn(5, 1, 3, 4, 4, generator=g)
    x = protos[[3, 0, 4, 4]] + 0.3 * torch.randn(4, 1, 3, 4, 4, generator=g)  # (B, C, T, H, W)
    err = class_errors(PrototypeFlow(protos), x, 5, draws=3, t_range=(0.2, 0.6), batch_size=7)  # rows split in batches
    dist = ((x[:, None] - protos[None]) ** 2).flatten(2).mean(-1)  # (B, K)
    scale = (1 / torch.tensor([0.2, 0.4, 0.6]) ** 2).mean()
    assert torch.allclose(err, dist * scale, rtol=1e-4)
    labels, margin = infer_class(PrototypeFlow(protos), x, 5, draws=3)
    assert labels.tolist() == [3, 0, 4, 4]
    top2 = dist.topk(2, dim=1, largest=False).values
    assert torch.allclose(margin, (top2[:, 1] - top2[:, 0]) / top2[:, 0], rtol=1e-4)
    with pytest.raises(ValueError, match="class-conditional"):
        class_errors(PrototypeFlow(protos), x, 1)


def test_the_bundled_model_reads_held_out_digits_and_extends_with_what_it_read():
    from mfvideo.eval.digits import real_clips
    from mfvideo.pipeline import MFVideoPipeline

    pipe = MFVideoPipeline.from_pretrained(None)
    cfg = pipe.cfg.data
    clips, labels = real_clips(40, "test", 4, cfg.resolution, cfg.digit_size, cfg.speed, seed=cfg.seed + 7)
    out = pipe.extend(clips, num_new_frames=4, context_frames=4, seed=0, infer_label=True, output_type="uint8")
    assert (out.class_labels == labels).mean() >= 0.8  # the model's own reading of unlabelled frames (chance: 0.1)
    same = pipe.extend(clips, num_new_frames=4, context_frames=4, seed=0, class_labels=out.class_labels.tolist(),
                       output_type="uint8")
    assert np.array_equal(out.frames, same.frames) and same.class_labels is None  # the read labels condition it
    null = pipe.extend(clips, num_new_frames=4, context_frames=4, seed=0, output_type="uint8")
    differ = (out.frames != null.frames).reshape(40, -1).any(1)  # a read label enters as the reader's one-hot reading:
    assert differ.any() and not differ.all()  # the frames change where the reader was unsure or read another class
    mid = pipe.condition(clips[:8, [0, 3]], [0, 7], seed=0, infer_label=True)
    assert mid.class_labels.shape == (8,) and (mid.class_labels == labels[:8]).mean() >= 0.6
    with pytest.raises(ValueError, match="not both"):
        pipe.extend(clips[:1], num_new_frames=4, class_labels=[3], infer_label=True)
    with pytest.raises(ValueError, match="pass video="):
        pipe(class_labels=[3], infer_label=True)
    call = pipe(video=clips[:2], num_new_frames=4, context_frames=4, infer_label=True,
                generator=torch.Generator().manual_seed(0))  # diffusers' call passes it on
    assert np.array_equal(call.class_labels, out.class_labels[:2])


def test_extend_cli_infer_class_says_what_it_read(tmp_path, capsys):
    from mfvideo.cli import extend as extend_cli
    from mfvideo.data.video_io import read_video
    from mfvideo.eval.digits import real_clips
    from mfvideo.io import save_video
    from mfvideo.pipeline import MFVideoPipeline

    clips, labels = real_clips(1, "test", 6, 16, 8, 1.0, seed=11)
    save_video(clips[0], tmp_path / "in.mp4", fps=6)
    assert extend_cli.main([str(tmp_path / "in.mp4"), "--num-new-frames", "4", "--infer-class",
                            "--out", str(tmp_path / "out.mp4")]) == 0
    said = capsys.readouterr().out.splitlines()[0]
    read = MFVideoPipeline.from_pretrained(None).extend(str(tmp_path / "in.mp4"), 4, infer_label=True).class_labels
    assert said == f"class read from the context: {int(read[0])}"  # the bundled model's names are the ids: not twice
    assert read_video(tmp_path / "out.mp4")[0].shape[0] == 10


def test_class_errors_draw_the_models_noise_prior():
    seen = []

    def net(z, t, r, y=None):
        seen.append(z / t.view(-1, 1, 1, 1, 1))  # x = 0: z / t is the noise
        return z * 0

    class_errors(net, torch.zeros(500, 1, 3, 4, 4), 2, draws=2, frame_correlation=0.6, batch_size=10_000)
    e = seen[0]
    cov = torch.cov(e.transpose(0, 2).reshape(3, -1))
    assert torch.allclose(cov[0, 1:], torch.full((2,), 0.6), atol=0.04)
