"""Motion-compensated copy (``pipeline.motion_copy``): a generated frame that its neighbour towards the given frames,
moved by whole pixels, explains becomes that moved frame; any other frame stays the network's, bit for bit."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mfvideo.eval.digits import glyph_match, real_clips
from mfvideo.pipeline.motion_copy import motion_copy


def _latents(clips: np.ndarray) -> torch.Tensor:
    """uint8 (N, T, H, W, 3) -> (N, 1, T, H, W) in [-1, 1], the identity codec's latents of the digits model."""
    return torch.from_numpy(clips[..., 0].astype(np.float32) / 127.5 - 1)[:, None]


def _after(ref: torch.Tensor, frames: torch.Tensor, **kw):
    """motion_copy of new frames (B, C, T, H, W) after one given frame ref (B, C, H, W) -> (new frames, accepted)."""
    out, accepted = motion_copy(torch.cat([ref[:, :, None], frames], dim=2), torch.arange(frames.shape[2] + 1) < 1, **kw)
    assert not accepted[:, 0].any() and torch.equal(out[:, :, 0], ref)  # the given frame stays as given
    return out[:, :, 1:], accepted[:, 1:]


def test_a_frame_the_moved_context_frame_explains_becomes_it_and_others_stay():
    clips, labels = real_clips(40, "test", 8, seed=3)
    x = _latents(clips)  # (40, 1, 8, 16, 16): digits moving by whole pixels
    other = next(i for i in range(1, 40) if labels[i] != labels[0])
    g = torch.Generator().manual_seed(0)
    near = x[0, :, 5] + 0.1 * torch.randn(x[0, :, 5].shape, generator=g)  # frame 5, redrawn with a small error
    out, accepted = _after(x[:1, :, 3], near[None, :, None], radius=4, tol=0.4)
    assert accepted.tolist() == [[True]]
    # exactly frame 5 (frame 3 moved by the digit's two steps) wherever the moved frame 3 covers it -- everywhere
    # farther than the radius from the border -- and the network's frame in the strip it does not
    assert torch.equal(out[0, :, 0, 4:-4, 4:-4], x[0, :, 5, 4:-4, 4:-4])
    assert bool(((out[0, :, 0] == x[0, :, 5]) | (out[0, :, 0] == near)).all())
    assert glyph_match(clips[:1, 3], clips[:1, 5:6]).item() > 0.999  # (the clip moves by whole pixels)
    for alien in (x[other, :, 5], torch.randn(1, 16, 16, generator=g)):  # another digit, noise: untouched
        out, accepted = _after(x[:1, :, 3], alien[None, :, None], radius=4, tol=0.4)
        assert not accepted.any() and torch.equal(out[0, :, 0], alien)
    # a tolerance below the redraw's error keeps it; beyond the radius the move is not found
    assert not _after(x[:1, :, 3], near[None, :, None], radius=4, tol=0.05)[1].any()
    far = torch.roll(x[0, :, 3], shifts=(0, 5), dims=(1, 2))
    assert not _after(x[:1, :, 3], far[None, :, None], radius=2, tol=0.4)[1].any()


def test_the_copy_runs_outwards_from_the_given_frames_one_frame_at_a_time():
    """Every frame of a clip redrawn with a small error; a one-pixel search finds each frame as its neighbour moved
    only if the copy runs frame by frame from the given frames: forwards after context, backwards before it, from both
    ends of an interpolation towards the middle (from the given frame itself, the fourth frame would need four
    frames' motion within the radius)."""
    clips, _ = real_clips(40, "test", 8, seed=3)
    x = _latents(clips)[:6]  # (6, 1, 8, 16, 16)
    redrawn = x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    for given in ([0, 1, 2, 3], [7], [0, 7], [3]):
        mask = torch.zeros(8, dtype=torch.bool)
        mask[given] = True
        window = torch.where(mask[None, None, :, None, None], x, redrawn)
        out, accepted = motion_copy(window, mask, radius=1, tol=0.4)
        assert accepted.tolist() == [(~mask).tolist()] * 6, given
        ink = x > -1  # the true clip's ink is copied exactly (what moves reveal at the border is the redraw's)
        assert torch.equal(out[ink], x[ink]), given
    assert torch.equal(motion_copy(redrawn, torch.zeros(8, dtype=torch.bool), radius=1, tol=0.4)[0], redrawn)


def test_what_a_move_brings_in_from_outside_stays_the_networks_and_ties_take_the_smaller_move():
    ref = -torch.ones(1, 1, 10, 10)
    ref[0, 0, 3:7, 3:6] = 1  # a block
    frame = -torch.ones(1, 1, 1, 10, 10)
    frame[0, 0, 0, 3:7, 5:8] = 1  # the block moved right by 2 ...
    frame[0, 0, 0, :, :2] = 0.3  # ... and the strip it leaves, which ref cannot tell, shows something new
    out, accepted = _after(ref, frame, radius=3, tol=0.1)
    assert accepted.item()
    assert torch.equal(out, frame)  # the moved block where ref covers the frame, the network's strip where not
    blank = -torch.ones(1, 1, 1, 10, 10)  # every move explains a blank frame: the smallest (none) is taken
    assert torch.equal(_after(-torch.ones(1, 1, 10, 10), blank, radius=3, tol=0.1)[0], blank)
    with pytest.raises(ValueError, match="motion_copy needs a radius >= 1"):
        _after(ref, frame, radius=0, tol=0.1)


def test_the_canvas_without_memory_is_the_frame_to_frame_copy():
    """``MotionCanvas`` with ``margin=0`` remembers nothing beyond the last frame: its chain is ``motion_copy``'s from
    a given first frame, bit for bit, rejected frames included."""
    from mfvideo.pipeline.motion_copy import MotionCanvas

    clips, _ = real_clips(40, "test", 8, seed=3)
    x = _latents(clips)[:8]  # (8, 1, 8, 16, 16)
    redrawn = x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    redrawn[:2, :, 5] = _latents(clips)[10:12, :, 5]  # two clips with another writer's frame: rejected
    expected, accepted = motion_copy(torch.cat([x[:, :, :1], redrawn[:, :, 1:]], dim=2), torch.arange(8) < 1, 2, 0.4)
    assert not accepted[:2, 5].any() and accepted[2:, 1:].all()
    canvas = MotionCanvas(x[:, :, 0], margin=0)
    steps = [canvas.step(redrawn[:, :, t], 2, 0.4) for t in range(1, 8)]
    assert torch.equal(torch.stack([o for o, _ in steps], dim=2), expected[:, :, 1:])
    assert torch.equal(torch.stack([a for _, a in steps], dim=1), accepted[:, 1:])


def test_what_leaves_the_frame_comes_back_as_it_was_and_a_rejected_frame_starts_afresh():
    """A digit moves right, 2 px a frame, until a third of it has left the frame, then back. Every frame is redrawn
    with a small error. The frame-to-frame copy forgets what left and, where it returns, keeps the redraw's pixels
    (copied on from then on); the canvas brings it back as the first frame showed it: the last frame, back at the
    first's place, is the first frame bit for bit. A frame no move explains starts the canvas afresh from it."""
    from mfvideo.pipeline.motion_copy import MotionCanvas

    clips, _ = real_clips(40, "test", 1, seed=5)
    glyphs = _latents(clips)[:4, :, 0]  # (4, 1, 16, 16): four digits
    for b in range(4):  # each one's ink from column 5 on (the columns rolled round are background)
        left = int((glyphs[b, 0] > -1).any(dim=0).nonzero()[0])
        glyphs[b] = torch.roll(glyphs[b], shifts=5 - left, dims=-1)
    world = F.pad(glyphs, (8, 0), value=-1.0)  # (4, 1, 16, 24): room on the left
    place = [0, 2, 4, 6, 8, 6, 4, 2, 0]  # the frame moves left over the world: the digit right in the frame
    truth = torch.stack([world[..., 8 - p : 24 - p] for p in place], dim=2)  # (4, 1, 9, 16, 16)
    shown = (truth[:, :, 4] > -1).sum((1, 2, 3)) / (glyphs > -1).sum((1, 2, 3))
    assert ((shown > 0.2) & (shown < 0.8)).all(), shown  # at the turn, a part of every digit has left
    redrawn = truth + 0.1 * torch.randn(truth.shape, generator=torch.Generator().manual_seed(0))
    canvas = MotionCanvas(truth[:, :, 0])
    out = torch.stack([canvas.step(redrawn[:, :, t], 4, 0.4)[0] for t in range(1, 9)], dim=2)
    assert torch.equal(out[:, :, -1], truth[:, :, 0])  # back where it started: as given, every pixel
    forgetful, _ = motion_copy(torch.cat([truth[:, :, :1], redrawn[:, :, 1:]], dim=2), torch.arange(9) < 1, 4, 0.4)
    assert not torch.equal(forgetful[:, :, -1], truth[:, :, 0])  # the frame-to-frame copy kept the redraw's part
    ink = truth[:, :, 0] > -1
    assert not torch.equal(forgetful[:, :, -1][ink], truth[:, :, 0][ink])
    # a frame no move explains (noise) stays the network's, and the chain goes on from it alone
    alien = torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    kept, ok = canvas.step(alien, 4, 0.4)
    assert not ok.any() and torch.equal(kept, alien)
    nxt = torch.roll(alien, shifts=1, dims=-1) + 0.05
    assert torch.equal(canvas.step(nxt, 4, 0.4)[0], MotionCanvas(alien).step(nxt, 4, 0.4)[0])


def test_a_chain_goes_on_across_windows_with_its_canvas_either_way_in_time():
    """``motion_copy(..., chains=)``, as ``condition`` fills a clip window by window: the digit of the test above,
    copied in overlapping windows of 4 (each with the frames already made as given ones), is one canvas stepped through
    every frame, bit for bit, and comes back as the first frame showed it; the same backwards in time, the given frame
    last. Without the chains each window's copy starts from its given frames' pixels alone and keeps the redraw."""
    from mfvideo.pipeline.motion_copy import MotionCanvas

    clips, _ = real_clips(40, "test", 1, seed=5)
    glyphs = _latents(clips)[:4, :, 0]
    for b in range(4):
        left = int((glyphs[b, 0] > -1).any(dim=0).nonzero()[0])
        glyphs[b] = torch.roll(glyphs[b], shifts=5 - left, dims=-1)
    world = F.pad(glyphs, (8, 0), value=-1.0)
    truth = torch.stack([world[..., 8 - p : 24 - p] for p in [0, 2, 4, 6, 8, 6, 4, 2, 0]], dim=2)  # (4, 1, 9, 16, 16)
    redrawn = truth + 0.1 * torch.randn(truth.shape, generator=torch.Generator().manual_seed(0))
    clip = torch.cat([truth[:, :, :1], redrawn[:, :, 1:]], dim=2)  # frame 0 given
    canvas = MotionCanvas(truth[:, :, 0])
    expected = torch.stack([truth[:, :, 0]] + [canvas.step(clip[:, :, t], 4, 0.4)[0] for t in range(1, 9)], dim=2)

    def fill(x, windows, chains):  # windows: (start, given flags), each window's output written back
        x = x.clone()
        for start, given in windows:
            x[:, :, start : start + 4] = motion_copy(x[:, :, start : start + 4], torch.tensor(given), 4, 0.4,
                                                     chains=chains, start=start)[0]
        return x

    forwards = [(0, [1, 0, 0, 0]), (3, [1, 0, 0, 0]), (5, [1, 1, 0, 0])]
    out = fill(clip, forwards, {})
    assert torch.equal(out, expected) and torch.equal(out[:, :, 8], truth[:, :, 0])
    backwards = [(5, [0, 0, 0, 1]), (2, [0, 0, 0, 1]), (0, [0, 0, 1, 1])]
    assert torch.equal(fill(clip.flip(2), backwards, {}), expected.flip(2))
    forgetful = fill(clip, forwards, None)
    assert not torch.equal(forgetful[:, :, 8], truth[:, :, 0])
    # only kept frames are recorded (a window's other frames are made again later, maybe from the other side), each
    # as its canvas then, and a record goes once the next frame on its chain is kept
    chains = {}
    first, _ = motion_copy(clip[:, :, :4], torch.tensor([1, 0, 0, 0]), 4, 0.4, chains=chains, keep=[1])
    assert set(chains) == {(1, 1)} and torch.equal(chains[1, 1].view(), first[:, :, 1])
    x = torch.cat([first[:, :, :2], clip[:, :, 2:]], dim=2)
    motion_copy(x[:, :, 1:5], torch.tensor([1, 0, 0, 0]), 4, 0.4, chains=chains, start=1, keep=[2, 3, 4])
    assert set(chains) == {(4, 1)} and torch.equal(chains[4, 1].view(), expected[:, :, 4])


def test_condition_after_the_given_frames_is_extend_bit_for_bit_copy_included():
    """A clip filled after its given frames by ``condition`` slides as ``extend`` does and its copy's chain keeps its
    canvas from window to window as ``extend``'s: the same frames, bit for bit, with the copy and without. (Before
    session 47 each window's copy started afresh: over 64 frames its last 8 held 0.07 isolated specks per frame and
    were 1.10 times as bright as the given ones, ``extend``'s 0 and 1.02.) A long gap between keyframes is filled by
    chains from both sides that likewise go on across windows."""
    from mfvideo.pipeline import MFVideoPipeline

    pipe = MFVideoPipeline.from_pretrained()
    clips, _ = real_clips(20, "test", 12, seed=3)
    given = clips[:, :4]
    for copy in (4, 0):
        ext = pipe.extend(given, num_new_frames=28, seed=0, output_type="uint8", motion_copy=copy).frames
        cond = pipe.condition(given, frame_indices=[0, 1, 2, 3], num_frames=32, seed=0, output_type="uint8",
                              motion_copy=copy).frames
        assert np.array_equal(cond, ext), copy


def test_extend_with_motion_copy_keeps_the_given_handwriting_and_the_model_sets_the_default():
    """The bundled model's unlabelled 1-NFE extension redraws the given digit (glyph match ~0.86 to the last given
    frame, ``motion_copy=0``); with motion_copy its new frames are that frame moved (~1.0). The default is the model's
    ``sample.motion_copy`` (the bundled model's 4, bit for bit; a model whose config says 0 draws its own frames, bit
    for bit). A bad radius or tolerance is refused with a one-line error, and so is a bad config value."""
    from mfvideo.config import ConfigError, load_config
    from mfvideo.pipeline import MFVideoPipeline

    pipe = MFVideoPipeline.from_pretrained()
    assert pipe.cfg.sample.motion_copy == 4
    clips, _ = real_clips(12, "test", 12, seed=4)
    kw = dict(seed=0, output_type="uint8", include_input=False)
    plain = pipe.extend(clips[:, :4], 8, motion_copy=0, **kw).frames[:, 4:]
    copied = pipe.extend(clips[:, :4], 8, motion_copy=4, **kw).frames[:, 4:]
    assert np.array_equal(pipe.extend(clips[:, :4], 8, **kw).frames[:, 4:], copied)
    assert np.array_equal(pipe(video=clips[:, :4], num_new_frames=8, generator=torch.Generator().manual_seed(0),
                               output_type="uint8").frames[:, 4:], copied)  # pipe(video=...) takes it too
    assert glyph_match(clips[:, 3], plain).mean() < 0.92
    assert glyph_match(clips[:, 3], copied).mean() > 0.96
    pipe.cfg.sample.motion_copy = 0
    assert np.array_equal(pipe.extend(clips[:, :4], 8, **kw).frames[:, 4:], plain)
    for bad in (dict(motion_copy=-1), dict(motion_copy=1.5), dict(motion_copy=2, motion_copy_tol=-0.1)):
        with pytest.raises(ValueError, match="motion_copy must be a whole number"):
            pipe.extend(clips[:1, :4], 4, **bad, **kw)
    with pytest.raises(ConfigError, match="sample.motion_copy"):
        load_config(Path(__file__).parents[1] / "configs" / "tiny.yaml", ["sample.motion_copy=-1"])


def test_interpolation_with_motion_copy_keeps_both_keyframes_glyph():
    """``condition`` copies from both keyframes inwards; its default is the model's ``sample.motion_copy`` too."""
    from mfvideo.pipeline import MFVideoPipeline

    pipe = MFVideoPipeline.from_pretrained()
    clips, _ = real_clips(12, "test", 8, seed=4)
    keys = clips[:, [0, 7]]
    plain = pipe.condition(keys, [0, 7], seed=0, output_type="uint8", motion_copy=0).frames
    copied = pipe.condition(keys, [0, 7], seed=0, output_type="uint8", motion_copy=4).frames
    assert np.array_equal(pipe.condition(keys, [0, 7], seed=0, output_type="uint8").frames, copied)
    assert np.array_equal(copied[:, [0, 7]], keys)
    assert glyph_match(clips[:, 0], plain[:, 1:7]).mean() < 0.92
    assert glyph_match(clips[:, 0], copied[:, 1:7]).mean() > 0.96
    pipe.cfg.sample.motion_copy = 0
    assert np.array_equal(pipe.condition(keys, [0, 7], seed=0, output_type="uint8").frames, plain)


def test_a_window_made_from_noise_is_copied_outwards_from_the_frame_the_others_agree_with():
    """No given frame: the anchor is the frame whose moves explain the others best, so a broken frame (strokes torn
    away) is never it; copied outwards from it, the broken frame becomes the anchor moved, and a frame no move
    explains (another digit) stays as it was, bit for bit."""
    from mfvideo.pipeline.motion_copy import anchor_frames, motion_copy_from_anchor

    clips, labels = real_clips(40, "test", 8, seed=3)
    x = _latents(clips)[:6]  # (6, 1, 8, 16, 16): digits moving by whole pixels
    broken = x.clone()
    for b, f in enumerate([0, 0, 3, 4, 7, 5]):  # one frame per clip torn through its middle, and grainy
        rows = (x[b, 0, f] > -1).any(dim=1).nonzero()[:, 0]
        middle = int(rows.float().mean())
        broken[b, :, f, middle - 1 : middle + 1] = -1
        broken[b, :, f] += 0.1 * torch.randn(broken[b, :, f].shape, generator=torch.Generator().manual_seed(b))
    anchors = anchor_frames(broken, radius=4)
    assert all(int(a) != f for a, f in zip(anchors, [0, 0, 3, 4, 7, 5])), anchors
    out, accepted, _ = motion_copy_from_anchor(broken, radius=4, tol=0.4)
    ink = x > -1
    assert torch.equal(out[ink], x[ink])  # every frame's ink the true clip's: the anchor's glyph moved
    assert accepted.sum(1).tolist() == [7] * 6 and not accepted[torch.arange(6), anchors].any()
    for b in range(6):  # the anchor is kept as the network made it
        assert torch.equal(out[b, :, anchors[b]], broken[b, :, anchors[b]])
    other = next(i for i in range(40) if labels[i] != labels[0])
    alien = x[:1].clone()
    alien[0, :, 7] = _latents(clips)[other, :, 7]  # the last frame (a frame after it would chain on from it)
    out, accepted, _ = motion_copy_from_anchor(alien, radius=4, tol=0.4)
    assert not accepted[0, 7] and torch.equal(out[0, :, 7], alien[0, :, 7])
    assert accepted[0].sum() == 6  # the rest copied (the anchor itself never is)


def test_a_faint_frame_is_never_the_anchor():
    """Windows whose frames are eight writers' glyphs, one of them at half its contrast: in plain squared distance the
    faint frame is nearest to every other (it was the anchor of 20 of these 40 windows before the distance was taken
    relative to the two frames' contrast); relative to contrast it is the anchor of none."""
    from mfvideo.pipeline.motion_copy import anchor_frames

    clips, _ = real_clips(320, "test", 8, seed=3)
    x = _latents(clips)[:, :, 0]  # (320, 1, 16, 16): first frames
    windows = torch.stack([x[8 * b : 8 * b + 8].transpose(0, 1) for b in range(40)])  # (40, 1, 8, 16, 16)
    for b in range(40):
        windows[b, :, b % 8] = (windows[b, :, b % 8] + 1) * 0.5 - 1  # its ink at half strength
    anchors = anchor_frames(windows, radius=4)
    assert not any(int(anchors[b]) == b % 8 for b in range(40)), anchors


def test_a_faded_frame_is_never_the_anchor_though_it_is_the_medoid():
    """Relative to contrast a faded frame can still be the medoid: a glyph whose ink fades to half and back
    (strength 1, 0.8, 0.5 x 4, 0.8, 1) is best explained from a faded frame, and copied from it the whole clip would
    be a ghost. Frames below ``ANCHOR_CONTRAST_FLOOR`` of the window's highest contrast are never the anchor: here
    only the full-strength ends are candidates. On the bundled network's own windows (200 generated 0s, the digit it
    fades most) the anchors faint at their peak (its 10 brightest pixels below 0.6) fall from 8.5 % to 1 %."""
    from mfvideo.pipeline import MFVideoPipeline
    from mfvideo.pipeline.motion_copy import ANCHOR_CONTRAST_FLOOR, anchor_frames

    clips, _ = real_clips(8, "test", 8, seed=3)
    x = _latents(clips)  # (8, 1, 8, 16, 16)
    strength = torch.tensor([1, 0.8, 0.5, 0.5, 0.5, 0.5, 0.8, 1.0])
    fading = -1 + (x + 1) * strength[:, None, None]  # (8, 1, 8, 16, 16): the ink faded, the background kept
    medoids = anchor_frames(fading, radius=4, contrast_floor=0.0)
    assert all(strength[int(a)] < 1 for a in medoids), medoids
    anchors = anchor_frames(fading, radius=4)
    assert ANCHOR_CONTRAST_FLOOR == 0.7 and all(int(a) in (0, 7) for a in anchors), anchors
    windows = MFVideoPipeline.from_pretrained().generate(class_labels=[0] * 200, seed=0, output_type="latent",
                                                         motion_copy=0).frames  # (200, 1, 8, 16, 16)

    def faint(anchors):  # the share of anchors whose 10 brightest pixels average below 0.6 (of [0, 1])
        peak = windows[torch.arange(200), :, anchors].flatten(1).topk(10, dim=1).values.mean(dim=1)
        return float(((peak + 1) / 2 < 0.6).float().mean())

    assert faint(anchor_frames(windows, radius=4, contrast_floor=0.0)) > 0.06
    assert faint(anchor_frames(windows, radius=4)) < 0.02


def test_generation_takes_the_models_motion_copy_and_keeps_one_hand_and_its_digit():
    """``generate`` (and ``pipe(class_labels=...)``) without ``motion_copy`` copies at the model's
    ``sample.motion_copy`` (the bundled model's 4, bit for bit; a config saying 0: the network's own frames, bit for
    bit). On the bundled model the copied clips keep one hand (glyph consistency ~1.0 against the network's ~0.87) and
    hold a frame read as another digit far less often (100 clips: 3 against 24)."""
    from mfvideo.eval.digits import DigitSuite, glyph_consistency
    from mfvideo.pipeline import MFVideoPipeline

    pipe, suite = MFVideoPipeline.from_pretrained(), DigitSuite.load()
    labels = np.arange(100) % 10
    kw = dict(class_labels=labels.tolist(), seed=0, output_type="uint8")
    own = pipe.generate(motion_copy=0, **kw).frames
    copied = pipe.generate(motion_copy=4, **kw).frames
    assert pipe.cfg.sample.motion_copy == 4
    assert np.array_equal(pipe.generate(**kw).frames, copied)
    assert np.array_equal(pipe(class_labels=labels[:3].tolist(), output_type="uint8",
                               generator=torch.Generator().manual_seed(0)).frames,
                          pipe.generate(class_labels=labels[:3].tolist(), seed=0, output_type="uint8",
                                        motion_copy=4).frames)
    assert glyph_consistency(own) < 0.92 and glyph_consistency(copied) > 0.99
    misread = {name: int((suite.predict(f)[0] != labels[:, None]).any(1).sum()) for name, f in
               (("own", own), ("copied", copied))}
    assert misread["copied"] <= misread["own"] - 10 and misread["copied"] <= 8, misread
    long = dict(num_frames=16, class_labels=[1, 4, 7], seed=0, output_type="uint8", frames_per_window=1)
    assert glyph_consistency(pipe.generate(**long).frames) > 0.99  # later windows chain on from the first
    pipe.cfg.sample.motion_copy = 0
    assert np.array_equal(pipe.generate(**kw).frames, own)


def test_a_long_generated_clip_keeps_its_glyph_brightness_and_clean_background():
    """48 generated frames past the first window: the windows go on one ``MotionCanvas`` chain, so the last 16 frames
    are the first frame's glyph with no stray pixels gathered and no brightening (30 clips: 0.03 isolated specks per
    frame, brightness 1.01 of the first window's; the frame-to-frame chain of session 45 gathered 0.13 and 1.05)."""
    from mfvideo.eval.digits import speckle
    from mfvideo.pipeline import MFVideoPipeline

    pipe = MFVideoPipeline.from_pretrained()
    clips = pipe.generate(num_frames=48, class_labels=(np.arange(30) % 10).tolist(), seed=0, output_type="uint8").frames
    last = clips[:, -16:]
    assert speckle(last) < 0.06
    assert abs(last[..., 0].mean() / clips[:, :8, ..., 0].mean() - 1) < 0.025
    assert glyph_match(clips[:, 0], last).mean() > 0.995


def test_every_window_goes_on_from_the_last_kept_frame(monkeypatch):
    """One frame kept per window (``frames_per_window=1``): each window's copy chain starts from the canvas at the last
    frame kept, not at the window's last (discarded) frame: before every window's first step the canvas shows, at its
    place, the context's last frame, bit for bit."""
    from mfvideo.pipeline import MFVideoPipeline
    from mfvideo.pipeline.motion_copy import MotionCanvas

    views, step = [], MotionCanvas.step

    def spy(self, frame, radius, tol, rows=None):  # what the canvas shows at its place before the step
        views.append(self.view(rows))
        return step(self, frame, radius, tol, rows)

    monkeypatch.setattr(MotionCanvas, "step", spy)
    pipe = MFVideoPipeline.from_pretrained()
    clips, _ = real_clips(6, "test", 4, seed=4)
    out = pipe.extend(clips, 6, frames_per_window=1, seed=0, output_type="latent").frames  # (6, 1, 10, 16, 16)
    assert len(views) == 6  # one new frame kept per window: only it is copied (a per-frame codec)
    for m in range(6):
        assert torch.equal(views[m], out[:, :, 3 + m]), m
    views.clear()  # whole windows, one kept: every window's chain from the last kept frame
    out = pipe.extend(clips, 6, frames_per_window=2, seed=0, output_type="latent").frames
    assert len(views) == 6
    for m in range(0, 6, 2):
        assert torch.equal(views[m], out[:, :, 3 + m]), m


def test_cli_extend_interpolate_and_sample_take_the_models_motion_copy(tmp_path, capsys):
    """``mfvideo-extend`` / ``mfvideo-interpolate`` / ``mfvideo-sample`` without ``--motion-copy`` write what the API's
    default gives (the bundled model's copy at 4, the given glyph kept, a generated clip one hand) and say so;
    ``--motion-copy 0`` writes the network's own frames."""
    from mfvideo.cli import extend, interpolate, sample
    from mfvideo.eval.digits import glyph_consistency
    from mfvideo.data.video_io import read_video
    from mfvideo.io import save_image, save_video

    clips, _ = real_clips(2, "test", 8, seed=4)
    save_video(clips[0, :4], tmp_path / "in.mp4", fps=6)
    args = [str(tmp_path / "in.mp4"), "--num-new-frames", "8", "--seed", "0", "--new-only"]
    for name, extra in (("default", []), ("own", ["--motion-copy", "0"])):
        assert extend.main([*args, *extra, "--out", str(tmp_path / f"{name}.mp4")]) == 0
        said = capsys.readouterr().out
        assert ("motion copy at radius 4, the model's default" in said) == (name == "default"), said
    glyph = {name: glyph_match(clips[:1, 3], read_video(tmp_path / f"{name}.mp4")[0][None, 4:]).mean()
             for name in ("default", "own")}
    assert glyph["default"] > 0.96 and glyph["own"] < glyph["default"] - 0.03
    for i in (0, 7):
        save_image(clips[0, i], tmp_path / f"k{i}.png")
    keys = [str(tmp_path / "k0.png"), str(tmp_path / "k7.png"), "--num-frames", "8", "--seed", "0"]
    for name, extra in (("mid_default", []), ("mid_own", ["--motion-copy", "0"])):
        assert interpolate.main([*keys, *extra, "--out", str(tmp_path / f"{name}.mp4")]) == 0
        assert ("motion copy at radius 4" in capsys.readouterr().out) == (name == "mid_default")
    mid = {name: glyph_match(clips[:1, 0], read_video(tmp_path / f"{name}.mp4")[0][None, 1:7]).mean()
           for name in ("mid_default", "mid_own")}
    assert mid["mid_default"] > 0.96 and mid["mid_own"] < mid["mid_default"] - 0.03
    for name, extra in (("gen_default", []), ("gen_own", ["--motion-copy", "0"])):
        assert sample.main(["--classes", "4", "--seed", "0", *extra, "--out", str(tmp_path / name)]) == 0
        assert ("motion copy at radius 4" in capsys.readouterr().out) == (name == "gen_default")
    gen = {name: glyph_consistency(read_video(next((tmp_path / name).glob("*.mp4")))[0][None])
           for name in ("gen_default", "gen_own")}
    assert gen["gen_default"] > 0.97 and gen["gen_own"] < gen["gen_default"] - 0.03, gen
