import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mfvideo.config import load_config
from mfvideo.data import MovingDigits, render_clip
from mfvideo.data.images import ImageFolder
from mfvideo.data.latent_cache import LatentCache, cache_dataset, write_manifest
from mfvideo.data.moving_digits import digit_bank
from mfvideo.data.video_io import VideoError, iter_frames, probe, read_frames, read_video
from mfvideo.data.videos import TooManyBadFiles, VideoFolder
from mfvideo.io import save_video
from vae_configs import TINY, tiny_vae


# ---------------------------------------------------------------------------------------------- moving digits
def test_moving_digits_deterministic_inside_frame_and_split_disjoint():
    a = MovingDigits(num_frames=12, resolution=16, digit_size=8, speed=2.0, seed=3)
    b = MovingDigits(num_frames=12, resolution=16, digit_size=8, speed=2.0, seed=3)
    assert torch.equal(a[5]["x"], b[5]["x"]) and a[5]["y"] == b[5]["y"]
    assert not torch.equal(a[5]["x"], MovingDigits(num_frames=12, resolution=16, digit_size=8, seed=4)[5]["x"])
    bank, _ = digit_bank("train", 8)
    for i in range(50):
        clip = render_clip(i, "train", num_frames=12, resolution=16, digit_size=8, speed=2.0, seed=3)
        assert (clip.positions >= 0).all() and (clip.positions <= 8).all()
        # the whole digit is visible in every frame: no ink lost at the borders
        np.testing.assert_allclose(clip.frames.sum(axis=(1, 2)), bank[clip.digit_index[0]].sum(), rtol=1e-5)
        assert 0 <= clip.label <= 9
    moves = np.abs(np.diff(clip.positions[:, 0], axis=0)).max()
    assert 0 < moves <= 2.0 + 1e-5
    train, test = digit_bank("train", 8)[0], digit_bank("test", 8)[0]
    assert len(train) + len(test) == 1797
    flat_train = {t.tobytes() for t in train}
    assert not any(t.tobytes() in flat_train for t in test)


def test_moving_digits_fixed_angle_moves_exactly_one_pixel_along_the_axis():
    for i in range(20):
        drawn = render_clip(i, "test", num_frames=12, resolution=16, digit_size=8, speed=1.0, seed=3)
        fixed = render_clip(i, "test", num_frames=12, resolution=16, digit_size=8, speed=1.0, seed=3,
                            angle=np.pi / 2)  # downwards
        assert (fixed.digit_index == drawn.digit_index).all()  # same glyph and start: only the direction is set
        np.testing.assert_allclose(fixed.positions[0], drawn.positions[0])
        corner = np.rint(fixed.positions[:, 0])  # (T, 2) rendered top-left corner
        assert (corner[:, 1] == corner[0, 1]).all()  # no sideways motion
        assert (np.abs(np.diff(corner[:, 0])) == 1).all()  # one whole pixel per frame, bounces included


def test_moving_digits_image_mode_and_range():
    d = MovingDigits(num_frames=1, resolution=16, digit_size=8, channels=3)
    x = d[0]["x"]
    assert x.shape == (3, 16, 16) and x.min() == -1 and x.max() <= 1


# ---------------------------------------------------------------------------------------------- videos
def write_counting_video(path, n, h=48, w=64, fps=10):
    """Frame i is a flat grey of value 8 i: the frame index can be read back from the pixels."""
    frames = np.stack([np.full((h, w, 3), 8 * i, np.uint8) for i in range(n)])
    return save_video(frames, path, fps=fps)


@pytest.fixture
def video_dir(tmp_path):
    root = tmp_path / "videos"
    write_counting_video(root / "apple" / "a.mp4", 30)
    write_counting_video(root / "banana" / "b.mp4", 24, fps=20)
    (root / "banana" / "corrupt.mp4").write_bytes(b"not a video at all" * 100)
    write_counting_video(root / "banana" / "short.mp4", 3)
    return root


@pytest.mark.parametrize("backend", ["decord", "imageio"])
def test_video_folder_reads_the_frames_it_says(video_dir, backend, caplog):
    ds = VideoFolder.from_folder(video_dir, num_frames=4, resolution=32, frame_stride=3, train=True, seed=1,
                                 backend=backend)
    assert ds.classes == ["apple", "banana"] and len(ds) == 4
    for i in range(len(ds)):
        item = ds[i]
        x = item["x"]
        assert x.shape == (3, 4, 32, 32) and x.min() >= -1 and x.max() <= 1
        grey = ((x.mean(dim=(0, 2, 3)) + 1) * 127.5).numpy()  # (T,) mean value per frame
        np.testing.assert_allclose(grey, 8 * np.array(item["frames"]), atol=3)  # the frames it says
        assert np.all(np.diff(item["frames"]) == 3)
    assert set(ds.bad) == {str(video_dir / "banana" / "corrupt.mp4"), str(video_dir / "banana" / "short.mp4")}
    assert "too short" in ds.bad[str(video_dir / "banana" / "short.mp4")]
    assert sum("skipping" in r.message for r in caplog.records) == 2  # one line per bad file


def test_grey_models_read_colour_folders_as_the_channels_mean(video_dir, tmp_path):
    """``data.channels=1`` (a grey model: the bundled one's config, fine-tuned on a user's colour videos) gets one
    channel, the RGB mean, as the pipeline reads a user's colour input for it; before session 51 the folders gave
    three and training stopped in the first convolution. A VAE with grey pixels, or 2 or 4 channels, is a
    config error."""
    from PIL import Image

    from mfvideo.config import ConfigError
    from mfvideo.frames import uint8_to_pixels

    rgb, grey = (VideoFolder.from_config(load_config(None, ["data.kind=video_folder", f"data.root={video_dir}",
                                                             "data.num_frames=4", "data.resolution=16",
                                                             f"data.channels={c}"]).data) for c in (3, 1))
    assert grey[0]["x"].shape == (1, 4, 16, 16) and torch.equal(grey[0]["x"], rgb[0]["x"].mean(0, keepdim=True))
    (tmp_path / "imgs" / "a").mkdir(parents=True)
    colour = np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(colour).save(tmp_path / "imgs" / "a" / "x.png")
    x = ImageFolder(tmp_path / "imgs", resolution=16, channels=1)[0]["x"]  # (1, 16, 16)
    torch.testing.assert_close(x, uint8_to_pixels(colour[None, None], channels=1)[0, :, 0])
    for overrides, said in ((["data.channels=4"], "1 \\(grey\\) or 3 \\(RGB\\), got 4"),
                            (["data.channels=1", "latents.kind=image_vae"], "a VAE encodes RGB frames")):
        with pytest.raises(ConfigError, match=said):
            load_config(None, overrides)


def test_a_folder_of_frames_is_a_video_in_natural_order(tmp_path):
    """A render's or a dataset's extracted frames (frame_1.png ... frame_12.png): read as a clip in natural order
    (frame_2 before frame_10, where a plain sort put frame_10 second), other files left out, with no frame rate of
    its own; a frame of another size, or a folder without frames, is one line naming it."""
    from PIL import Image

    from mfvideo.data.video_io import iter_frames

    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(12):
        Image.fromarray(np.full((20, 30, 3), 8 * i, np.uint8)).save(frames / f"frame_{i + 1}.png")
    (frames / "notes.txt").write_text("shot 3")
    (frames / "._frame_1.png").write_bytes(b"AppleDouble")  # macOS's, not a frame
    info = probe(frames)
    assert (info.num_frames, info.fps, info.height, info.width) == (12, 0.0, 20, 30)
    video, _ = read_video(frames)
    assert video[:, 0, 0, 0].tolist() == [8 * i for i in range(12)]
    assert np.array_equal(np.concatenate(list(iter_frames(frames, chunk=5))), video)
    assert read_frames(frames, [11, 0, 11])[:, 0, 0, 0].tolist() == [88, 0, 88]
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(frames / "frame_13.png")
    with pytest.raises(VideoError, match=r"frame_13.png: 20 x 20, the folder's first frame \(frame_1.png\) 30 x 20"):
        read_video(frames)
    (tmp_path / "empty").mkdir()
    with pytest.raises(VideoError, match="a folder without image frames"):
        probe(tmp_path / "empty")


def test_a_video_dataset_of_frame_folders_trains_as_one_of_files(video_dir, tmp_path):
    """``<class>/<clip>/frame_N.png`` (a dataset of extracted frames) is a video folder: each frame folder a clip, never
    a class, beside the class's video files; a folder of frame folders alone is flat, unlabelled."""
    from PIL import Image

    def frames(folder, n):
        folder.mkdir(parents=True)
        for i in range(n):  # frame i a flat grey of 8 i, as write_counting_video's
            Image.fromarray(np.full((24, 32, 3), 8 * i, np.uint8)).save(folder / f"frame_{i + 1}.png")

    frames(video_dir / "apple" / "shot_a", 20)
    frames(video_dir / "cherry" / "shot_c", 12)
    ds = VideoFolder.from_folder(video_dir, num_frames=4, resolution=16, frame_stride=2, train=False).scan()
    assert ds.classes == ["apple", "banana", "cherry"]
    by_name = {Path(f).name: (i, y) for i, (f, y) in enumerate(ds.files)}
    assert by_name["shot_a"][1] == 0 and by_name["shot_c"][1] == 2 and by_name["a.mp4"][1] == 0
    item = ds[by_name["shot_c"][0]]
    assert item["frames"] == [2, 4, 6, 8]  # the centre window of 12 frames at stride 2: no frame rate of its own
    grey = ((item["x"].mean(dim=(0, 2, 3)) + 1) * 127.5).numpy()
    np.testing.assert_allclose(grey, 8 * np.array(item["frames"]), atol=1)  # the frames it says, in natural order
    flat = tmp_path / "flat"
    frames(flat / "x", 6), frames(flat / "y", 6)
    ds = VideoFolder.from_folder(flat, num_frames=4, resolution=16)
    assert ds.classes is None and [y for _, y in ds.files] == [-1, -1] and ds[1]["x"].shape == (3, 4, 16, 16)


def test_a_video_folder_is_scanned_in_a_pool_as_one_by_one_and_its_items_are_not_probed_again(tmp_path, caplog,
                                                                                              monkeypatch):
    """scan() probes in a thread pool (UCF-101's 13,320 files took ~7 minutes one by one): the same files kept and
    the same skipped, named in the dataset's order; file descriptor 2 is stderr again afterwards (decord's silencing,
    entered by several threads at once, is counted: two threads each saving and restoring it left it at /dev/null);
    and an item's load reads the probe the scan kept instead of opening its file once more."""
    import mfvideo.data.videos as videos

    for i in range(6):
        write_counting_video(tmp_path / f"good{i}.mp4", 12 + i)
        (tmp_path / f"bad{i}.mp4").write_bytes(b"\x00" * 64 * (i + 1))
    write_counting_video(tmp_path / "short.mp4", 2)
    before = os.fstat(2)
    runs = []
    for threads in (1, 4):
        caplog.clear()
        ds = VideoFolder.from_folder(tmp_path, num_frames=4, resolution=16, max_bad_fraction=0.6, train=False)
        with caplog.at_level("WARNING", logger="mfvideo.data.videos"):
            ds.scan(threads=threads)
        runs.append((ds.files, ds.bad, [r.getMessage() for r in caplog.records]))
        after = os.fstat(2)
        assert (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino), threads
    assert runs[0] == runs[1] and len(runs[0][0]) == 6 and len(runs[0][1]) == 7
    assert runs[1][2][:2] == [f"skipping {tmp_path / 'bad0.mp4'}: {runs[1][1][str(tmp_path / 'bad0.mp4')]}",
                              f"skipping {tmp_path / 'bad1.mp4'}: {runs[1][1][str(tmp_path / 'bad1.mp4')]}"]
    calls = []
    monkeypatch.setattr(videos, "probe", lambda *a, **k: calls.append(a) or pytest.fail("probed again"))
    item = ds[0]
    assert not calls and item["frames"] == [4, 5, 6, 7]  # good0: 12 frames, the centre window


def test_centre_crop_in_eval_and_target_fps(video_dir):
    ds = VideoFolder.from_folder(video_dir, num_frames=4, resolution=32, train=False, target_fps=5)
    assert ds.load(0)["frames"] == [11, 13, 15, 17]  # 10 fps -> stride 2, a 7-frame span centred in 30
    assert ds.load(1)["frames"] == [5, 9, 13, 17]  # 20 fps -> stride 4, a 13-frame span centred in 24


def test_mostly_broken_dataset_stops_with_a_clear_error(tmp_path):
    for i in range(3):
        (tmp_path / f"bad{i}.mp4").write_bytes(b"\x00" * 64)
    write_counting_video(tmp_path / "good.mp4", 20)
    ds = VideoFolder.from_folder(tmp_path, num_frames=4, resolution=32)
    with pytest.raises(TooManyBadFiles, match="unreadable"):
        for i in range(len(ds)):
            ds[i]
    with pytest.raises(TooManyBadFiles, match=r"3 of 4 videos are unreadable or too short \(e.g. .*bad0.mp4"):
        VideoFolder.from_folder(tmp_path, num_frames=4, resolution=32).scan()  # counted over the whole folder
    write_counting_video(tmp_path / "good2.mp4", 20)
    write_counting_video(tmp_path / "good3.mp4", 2)  # too short for a 4-frame clip
    scanned = VideoFolder.from_folder(tmp_path, num_frames=4, resolution=32, max_bad_fraction=0.7).scan()
    assert sorted(Path(p).name for p, _ in scanned.files) == ["good.mp4", "good2.mp4"]
    assert sorted(Path(p).name for p in scanned.bad) == ["bad0.mp4", "bad1.mp4", "bad2.mp4", "good3.mp4"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no videos"):
        VideoFolder.from_folder(tmp_path / "empty", num_frames=4)


def test_decord_misdecoded_width_falls_back_to_imageio(tmp_path):
    path = write_counting_video(tmp_path / "narrow.mp4", 6, h=64, w=96)  # decord2 3.4.0 mis-decodes width 96
    frames = read_frames(path, [1, 4], backend="decord")
    assert frames.shape == (2, 64, 96, 3)
    np.testing.assert_allclose(frames.reshape(2, -1).mean(1), [8, 32], atol=2)


def test_gif_and_long_video_partial_read(tmp_path):
    import imageio.v2 as imageio

    gif = tmp_path / "a.gif"
    imageio.mimsave(gif, [np.full((16, 16, 3), 30 * i, np.uint8) for i in range(5)], duration=100, loop=0)
    assert probe(gif).num_frames == 5
    np.testing.assert_allclose(read_frames(gif, [3])[0].mean(), 90, atol=2)
    with pytest.raises(VideoError, match="frame 9 was requested"):
        read_frames(gif, [9])


def test_a_still_image_is_a_one_frame_clip(tmp_path):
    """PNG / JPEG / WebP paths read as one-frame clips (image to video): PNG exactly, JPEG within its compression."""
    import imageio.v2 as imageio

    img = (np.random.default_rng(0).random((12, 20, 3)) * 255).astype(np.uint8)
    imageio.imwrite(tmp_path / "a.png", img)
    imageio.imwrite(tmp_path / "a.jpg", np.full((12, 20, 3), 90, np.uint8))
    assert probe(tmp_path / "a.png").num_frames == 1 and probe(tmp_path / "a.png").width == 20
    assert np.array_equal(read_frames(tmp_path / "a.png", [0])[0], img)
    assert np.array_equal(next(iter_frames(tmp_path / "a.png")), img[None])
    np.testing.assert_allclose(read_video(tmp_path / "a.jpg")[0].mean(), 90, atol=1)
    with pytest.raises(VideoError, match="frame 1 was requested"):
        read_frames(tmp_path / "a.png", [1])
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not an image" * 10)
    with pytest.raises(VideoError, match="bad.png: unreadable"):
        probe(tmp_path / "bad.png")


# ---------------------------------------------------------------------------------------------- images
def test_a_16_bit_grey_image_reads_as_its_shades_not_white(tmp_path):
    """PIL's convert("RGB") clips 16-bit grey ("I;16", as PIL opens a 16-bit grey PNG) at 255: such an image came out
    nearly white through the still-image reader (image to video), the image-folder dataset and a PIL input. Each now
    reads it as its 8-bit version (within one level)."""
    from PIL import Image

    from mfvideo.frames import to_uint8

    ramp16 = np.linspace(0, 65535, 32 * 32).reshape(32, 32).astype(np.uint16)
    ramp8 = (ramp16 / 257 + 0.5).astype(np.uint8)
    for name, arr in (("deep", ramp16), ("flat", ramp8)):
        (tmp_path / "cls" / name).mkdir(parents=True)
        Image.fromarray(arr).save(tmp_path / "cls" / name / "x.png")
    deep = tmp_path / "cls" / "deep" / "x.png"
    with Image.open(deep) as im:
        assert im.mode.startswith("I") and np.asarray(im.convert("RGB")).mean() > 250  # PIL's own: white
        assert np.abs(to_uint8(im).astype(int) - ramp8[..., None]).max() <= 1
    assert np.abs(read_frames(deep, [0])[0].astype(int) - ramp8[..., None]).max() <= 1
    assert np.abs(next(iter_frames(deep))[0].astype(int) - ramp8[..., None]).max() <= 1
    items = ImageFolder(tmp_path / "cls", resolution=32)  # classes "deep" and "flat": the same image at two depths
    assert [f.parent.name for f, _ in items.files] == ["deep", "flat"]
    assert (items[0]["x"] - items[1]["x"]).abs().max() <= 2.5 / 127.5 and items[0]["x"].std() > 0.5


def test_a_phone_photo_reads_upright_as_a_viewer_and_diffusers_show_it(tmp_path):
    """A phone stores a portrait photo landscape with an EXIF orientation tag (6: turn a quarter clockwise). It was
    read as stored, on its side, by the still-image reader (image to video) and as a PIL input; now upright, as
    diffusers' ``load_image`` gives it, through the reader, a PIL input and the image-folder dataset."""
    from diffusers.utils import load_image
    from PIL import Image

    from mfvideo.frames import frames_shape, to_uint8

    stored = np.zeros((24, 40, 3), np.uint8)
    stored[:6, :, 0] = 255  # a red band along the stored top
    exif = Image.Exif()
    exif[0x0112] = 6
    (tmp_path / "cls").mkdir()
    photo = tmp_path / "cls" / "IMG_0001.jpg"
    Image.fromarray(stored).save(photo, exif=exif, quality=95)
    shown = np.asarray(load_image(str(photo)))
    assert shown.shape == (40, 24, 3) and shown[:, -6:, 0].mean() > 200  # the band on the right, as a viewer shows it
    assert probe(photo).height == 40 and np.array_equal(read_frames(photo, [0])[0], shown)
    assert np.array_equal(next(iter_frames(photo))[0], shown)
    with Image.open(photo) as im:
        assert frames_shape(im) == (40, 24, 3) and np.array_equal(to_uint8(im), shown)
    x = ImageFolder(tmp_path, resolution=24)[0]["x"]  # (3, 24, 24): the centre of the upright photo
    assert x[0, :, -4:].mean() > 0.5 and x[0, :, :4].mean() < -0.5


def test_image_folder_classes_and_adm_crop(tmp_path):
    from PIL import Image

    for c in ("zebra", "ant"):
        (tmp_path / "train" / c).mkdir(parents=True)
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (80, 120, 3), dtype=np.uint8)).save(tmp_path / "train" / c / "x.png")
    ds = ImageFolder(tmp_path, "train", resolution=32, hflip=True)
    assert ds.classes == ["ant", "zebra"] and ds[1]["y"] == 1 and ds[0]["x"].shape == (3, 32, 32)
    for name in ("CAM_0001.JPG", "scan.Png", "notes.txt"):  # a camera's upper-case suffix is an image too
        Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "train" / "ant" / name, format="PNG")
    assert [Path(f).name for f, _ in ImageFolder(tmp_path, "train").files] == ["CAM_0001.JPG", "scan.Png", "x.png",
                                                                             "x.png"]
    flips = {torch.equal(ds[0 + 2 * e]["x"], ds[0]["x"]) for e in range(8)}
    assert flips == {True, False}  # flipped in some epochs, deterministically


def test_class_names_name_the_class_folders_from_imagenet_s_mapping_file_through_the_cache(tmp_path, caplog):
    """``data.class_names``: ImageNet's LOC_synset_mapping.txt as distributed (or JSON) names the class folders, ids
    in the folders' order; the names reach the latent cache and the checkpoint (``id2label``), and a bad file is one
    line naming it."""
    from PIL import Image

    from mfvideo.cli import cache_latents as cache_cli
    from mfvideo.cli import train as train_cli
    from mfvideo.config import DataConfig
    from mfvideo.data import build_dataset
    from mfvideo.pipeline import MFVideoPipeline

    for c in ("n01440764", "n01443537", "n09999999"):
        (tmp_path / "imgs" / "train" / c).mkdir(parents=True)
        Image.fromarray(np.full((20, 20, 3), 90, np.uint8)).save(tmp_path / "imgs" / "train" / c / "a.JPEG", "JPEG")
    mapping = tmp_path / "LOC_synset_mapping.txt"
    mapping.write_text("n01440764 tench, Tinca tinca\nn01443537 goldfish, Carassius auratus\nn01484850 great white "
                       "shark\n")
    data = DataConfig(kind="image_folder", root=str(tmp_path / "imgs"), resolution=16, num_frames=1,
                      class_names=str(mapping))
    with caplog.at_level("WARNING"):
        assert build_dataset(data).classes == ["tench, Tinca tinca", "goldfish, Carassius auratus", "n09999999"]
    assert "does not name 1 of 3 class folders (n09999999)" in caplog.text  # it keeps its folder name
    (tmp_path / "names.json").write_text('{"n01443537": "goldfish"}')
    assert build_dataset(replace(data, class_names=str(tmp_path / "names.json"))).classes[:2] == ["n01440764", "goldfish"]
    for text, said in (("n01440764\n", "line 1: expected '<folder> <class name>'"), ("[1, 2]", "a JSON object"),
                       ("n1 a\n", "names none of the 3 class folders")):
        bad = tmp_path / ("bad.json" if text.startswith("[") else "bad.txt")
        bad.write_text(text)
        with pytest.raises(ValueError, match=said):
            build_dataset(replace(data, class_names=str(bad)))
    with pytest.raises(FileNotFoundError, match="nowhere.txt: no such file"):
        build_dataset(replace(data, class_names=str(tmp_path / "nowhere.txt")))
    # through the cache and training: the model's classes go by the names
    cfg = [str(Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"), "data.kind=image_folder",
           f"data.root={tmp_path / 'imgs'}", "data.num_frames=1", "data.channels=3", "model.patch_size=2",
           "data.resolution=16", f"data.class_names={mapping}", "latents.kind=image_vae",
           f"latents.path={tmp_path / 'vae'}", "train.batch_size=2", "model.num_classes=3"]
    tiny_vae("image_vae").save_pretrained(tmp_path / "vae")
    assert cache_cli.main([*cfg, "--out", str(tmp_path / "cache")]) == 0
    assert train_cli.main([*cfg, "data.kind=latent_cache", f"data.root={tmp_path / 'cache'}",
                           f"train.output_dir={tmp_path / 'run'}", "train.max_steps=1", "train.checkpoint_every=1"]) == 0
    pipe = MFVideoPipeline.from_pretrained(tmp_path / "run" / "checkpoints" / "step_00000001")
    assert pipe.labels["0"] == "tench, Tinca tinca" and pipe.get_label_ids(["goldfish", "Tench", "n09999999"]) == [1, 0, 2]
    # a model trained without names is named on export
    from mfvideo.cli import export as export_cli

    (tmp_path / "more.json").write_text('{"n09999999": "carp"}')
    assert export_cli.main([str(tmp_path / "run"), "--out", str(tmp_path / "named"), "--class-names",
                            str(tmp_path / "more.json")]) == 0
    named = MFVideoPipeline.from_pretrained(tmp_path / "named")
    assert list(named.labels.values()) == ["tench, Tinca tinca", "goldfish, Carassius auratus", "carp"]
    assert torch.equal(named.generate(class_labels=["carp"], seed=0, output_type="pt").frames,
                       pipe.generate(class_labels=[2], seed=0, output_type="pt").frames)


def test_folders_leave_out_what_tools_put_there_and_take_flat_folders_unlabelled(tmp_path, video_dir, caplog):
    """A Jupyter checkpoint folder or macOS's __MACOSX was a class (id 0, every real label shifted by one) and an
    AppleDouble ``._x.png`` an image that failed to decode mid-training; a flat image folder (FFHQ-like) was refused.
    Now hidden entries are not data, a flat folder is unlabelled (label -1, unconditional), and a class folder with
    no files keeps its id with a warning."""
    from PIL import Image

    root = tmp_path / "imgs"
    for c in ("ant", "zebra", ".ipynb_checkpoints", "__MACOSX"):
        (root / c).mkdir(parents=True)
        Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(root / c / "x.png")
    (root / "ant" / "._x.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # not an image
    (root / "empty").mkdir()
    ds = ImageFolder(root, resolution=16)
    assert ds.classes == ["ant", "empty", "zebra"] and ds.num_classes == 3
    assert [(Path(f).relative_to(root).as_posix(), y) for f, y in ds.files] == [("ant/x.png", 0), ("zebra/x.png", 2)]
    assert any("class folder empty holds no" in r.getMessage() and "keeps id 1" in r.getMessage()
               for r in caplog.records)
    flat = tmp_path / "flat"
    flat.mkdir()
    for name in ("a.png", "b.jpg", ".c.png"):
        Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(flat / name, format="PNG")
    ds = ImageFolder(flat, resolution=16)
    assert ds.classes is None and ds.num_classes == 0 and [y for _, y in ds.files] == [-1, -1]
    assert ds[1]["y"] == -1 and ds[1]["x"].shape == (3, 16, 16)
    (video_dir / ".ipynb_checkpoints").mkdir()
    write_counting_video(video_dir / ".ipynb_checkpoints" / "a-checkpoint.mp4", 30)
    write_counting_video(video_dir / "apple" / "._a.mp4", 30)
    ds = VideoFolder.from_folder(video_dir, num_frames=4, resolution=32)
    assert ds.classes == ["apple", "banana"]
    assert sorted(Path(f).name for f, _ in ds.files) == ["a.mp4", "b.mp4", "corrupt.mp4", "short.mp4"]
    # data.split=val on a folder of train/ and test/: those were two classes, "test" and "train"
    from mfvideo.config import DataConfig
    from mfvideo.data.listing import SplitError

    splits = tmp_path / "splits"
    for split in ("train", "test"):
        shutil.copytree(video_dir, splits / split)
    with pytest.raises(SplitError, match=r"holds train/, test/ but no val/ \(data.split=val\)"):
        VideoFolder.from_config(DataConfig(kind="video_folder", root=str(splits), num_frames=4), split="val")
    assert VideoFolder.from_config(DataConfig(kind="video_folder", root=str(splits), num_frames=4)).classes == [
        "apple", "banana"]
    with pytest.raises(SplitError, match="no val/"):
        ImageFolder(splits, "val")


# ---------------------------------------------------------------------------------------------- codecs
def make_codec(kind, **vae_overrides):
    from mfvideo.latents.vae import ImageVAECodec, VideoVAECodec

    vae = tiny_vae(kind)
    if vae_overrides:
        import diffusers

        name, kw = TINY[kind]
        vae2 = getattr(diffusers, name)(**{**kw, **vae_overrides}).eval()
        vae2.load_state_dict(vae.state_dict())
        vae = vae2
    return ImageVAECodec(vae) if kind in ("image_vae", "dc_ae") else VideoVAECodec(vae, kind)


FRAMES = {"image_vae": 3, "dc_ae": 3, "wan": 9, "cogvideox": 9, "hunyuan": 9, "ltx": 9}


@pytest.mark.parametrize("kind", list(TINY))
def test_codec_round_trip_and_frame_rule(kind):
    codec = make_codec(kind)
    T = FRAMES[kind]
    x = torch.rand(1, 3, T, 64, 64) * 2 - 1
    z = codec.encode(x)
    assert z.shape == (1, *codec.latent_shape((T, 64, 64)))
    y = codec.decode(z)
    assert y.shape == x.shape and y.abs().max() <= 1
    if codec.temporal_factor > 1:
        with pytest.raises(ValueError, match=rf"needs {codec.temporal_factor}k\+1 frames, got {T + 1}"):
            codec.encode(torch.zeros(1, 3, T + 1, 64, 64))


@pytest.mark.parametrize("kind, held, fix", [("image_vae", "wan", "latents.kind=wan"),
                                             ("ltx", "image_vae", "latents.kind=image_vae"),
                                             ("image_vae", "dc_ae", "latents.kind=dc_ae"),
                                             ("image_vae", None, "a VAE of a class mfvideo reads: AutoencoderKL")])
def test_a_vae_folder_of_another_kind_is_named_for_what_it_holds(kind, held, fix, tmp_path):
    """latents.kind=image_vae on a Wan VAE's folder stopped in diffusers with a shape mismatch of decoder.conv_in.bias;
    ltx on a Wan folder with "unsupported operand type(s) for ** or pow()". The folder's class is read first."""
    from mfvideo.config import ConfigError, LatentsConfig
    from mfvideo.latents.vae import build_vae_codec

    if held:
        tiny_vae(held).save_pretrained(tmp_path / "vae")
        name = type(tiny_vae(held)).__name__
    else:  # a class mfvideo has no codec for (TAESD's)
        (tmp_path / "vae").mkdir()
        (tmp_path / "vae" / "config.json").write_text('{"_class_name": "AutoencoderTiny"}')
        name = "AutoencoderTiny"
    with pytest.raises(ConfigError, match=rf"holds an {name}, not the .* latents.kind={kind} reads: {fix}"):
        build_vae_codec(LatentsConfig(kind=kind, path=str(tmp_path / "vae")))


def test_a_wan_vae_config_of_older_diffusers_without_patch_size_loads():
    """diffusers before 0.35 writes and reads Wan VAE configs without ``patch_size`` (Wan 2.2's key): the codec
    stopped with "'FrozenDict' object has no attribute 'patch_size'" on every Wan 2.1 VAE there."""
    from diffusers.configuration_utils import FrozenDict

    from mfvideo.latents.vae import VideoVAECodec

    vae = tiny_vae("wan")
    want = VideoVAECodec(vae, "wan").spatial_factor
    vae._internal_dict = FrozenDict({k: v for k, v in vae.config.items() if k != "patch_size"})
    assert "patch_size" not in vae.config and VideoVAECodec(vae, "wan").spatial_factor == want == 8


@pytest.mark.parametrize("kind", list(TINY))
def test_codec_normalisation_comes_from_the_vae_config(kind):
    torch.manual_seed(0)
    T = FRAMES[kind]
    x = torch.rand(2, 3, T, 64, 64) * 2 - 1
    raw_codec = make_codec(kind)
    per_frame = kind in ("image_vae", "dc_ae")
    z = raw_codec.encode(x)
    raw = z / raw_codec.scale if per_frame else z * raw_codec.std / raw_codec.scale + raw_codec.mean
    # a VAE whose config states the statistics of these latents must give unit-scale normalised latents
    mean, std = raw.mean(dim=(0, 2, 3, 4)), raw.std(dim=(0, 2, 3, 4))
    if kind in ("wan",):
        codec = make_codec(kind, latents_mean=mean.tolist(), latents_std=std.tolist())
    elif kind == "ltx":
        codec = make_codec(kind)
        codec.vae.latents_mean.copy_(mean)
        codec.vae.latents_std.copy_(std)
        codec = type(codec)(codec.vae, "ltx")
    else:
        codec = make_codec(kind, scaling_factor=float(1 / raw.std()), **({"shift_factor": float(raw.mean())} if kind == "image_vae" else {}))
    z = codec.encode(x)
    if kind in ("wan", "ltx"):
        torch.testing.assert_close(z.mean(dim=(0, 2, 3, 4)), torch.zeros_like(mean), atol=1e-4, rtol=0)
        torch.testing.assert_close(z.std(dim=(0, 2, 3, 4)), torch.ones_like(std), atol=1e-4, rtol=0)
    else:
        assert abs(z.std().item() - 1) < 0.05
    # decode inverts the normalisation exactly
    torch.testing.assert_close(codec.decode(z), raw_codec.decode(raw_codec.encode(x)), atol=1e-4, rtol=1e-4)


def test_sd_vae_scale_is_read_from_config():
    codec = make_codec("image_vae")
    assert codec.scale == pytest.approx(0.18215)  # the diffusers default, never a constant of ours
    assert make_codec("image_vae", scaling_factor=0.5).scale == 0.5


def test_a_vae_loads_from_its_folder_or_a_pipeline_folder_holding_it_and_a_hub_id_is_named(tmp_path):
    """``latents.path``: the VAE's own folder, or a whole pipeline's (Wan's, SD's) with the VAE in ``vae/``; a hub id
    (nothing is fetched) is one line saying so, before any network access is tried."""
    from mfvideo.config import ConfigError
    from mfvideo.latents.vae import build_vae_codec

    tiny_vae("wan").save_pretrained(tmp_path / "Wan2.1-T2V" / "vae")
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml").latents
    cfg.kind = "wan"
    x = torch.rand(1, 3, 5, 16, 16) * 2 - 1
    cfg.path = str(tmp_path / "Wan2.1-T2V" / "vae")
    direct = build_vae_codec(cfg).encode(x)
    cfg.path = str(tmp_path / "Wan2.1-T2V")
    assert torch.equal(build_vae_codec(cfg).encode(x), direct)
    cfg.path = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"
    with pytest.raises(ConfigError, match="no such folder .*a hub id is not fetched"):
        build_vae_codec(cfg)


def test_manifests_take_ids_or_names_and_bad_rows_name_their_line(tmp_path, caplog):
    from mfvideo.data.videos import read_manifest

    (tmp_path / "names.csv").write_text("path,label\nv/a.mp4,red fox\n/abs/b.mp4,cat\nv/c.mp4,\nv/d.mp4,cat\n")
    rows, classes = read_manifest(tmp_path / "names.csv")
    assert classes == ["cat", "red fox"]
    assert rows == [(str(tmp_path / "v/a.mp4"), 1), ("/abs/b.mp4", 0), (str(tmp_path / "v/c.mp4"), -1),
                    (str(tmp_path / "v/d.mp4"), 0)]
    (tmp_path / "ids.jsonl").write_text('{"path": "a.mp4", "label": 0}\n\n{"path": "b.mp4", "label": "2"}\n'
                                        '{"path": "c.mp4"}\n')
    rows, classes = read_manifest(tmp_path / "ids.jsonl")
    assert classes is None and [y for _, y in rows] == [0, 2, -1]
    # saved by Excel ("CSV UTF-8") or Notepad: a byte-order mark and CRLF; the header's 'path' had read as '\ufeffpath'
    (tmp_path / "excel.csv").write_bytes("path,label\r\nv/é.mp4,éléphant\r\n".encode("utf-8-sig"))
    (tmp_path / "bom.jsonl").write_bytes('{"path": "a.mp4", "label": "chat"}\r\n'.encode("utf-8-sig"))
    assert read_manifest(tmp_path / "excel.csv") == ([(str(tmp_path / "v/é.mp4"), 0)], ["éléphant"])
    assert read_manifest(tmp_path / "bom.jsonl") == ([(str(tmp_path / "a.mp4"), 0)], ["chat"])
    # a header as people type it ("Path, Label") is the same columns; one of other names is said, not dropped silently
    (tmp_path / "typed.csv").write_text("Path, Label\na.mp4,cat\n")
    assert read_manifest(tmp_path / "typed.csv") == ([(str(tmp_path / "a.mp4"), 0)], ["cat"])
    (tmp_path / "class.csv").write_text("path,class\na.mp4,cat\n")
    with caplog.at_level("WARNING", logger="mfvideo.data.videos"):
        assert read_manifest(tmp_path / "class.csv") == ([(str(tmp_path / "a.mp4"), -1)], None)
    assert "class.csv: column(s) class not read: a manifest has 'path' and 'label' (none here: every video " \
           "unlabelled)" in caplog.text
    (tmp_path / "nopath.csv").write_text("file,label\na.mp4,1\n")
    (tmp_path / "bad.jsonl").write_text('{"path": "a.mp4"}\n{"label": 1}\n')
    (tmp_path / "neg.csv").write_text("path,label\na.mp4,1\nb.mp4,-3\n")
    (tmp_path / "empty.csv").write_text("path,label\n")
    for name, says in (("nopath.csv", "needs a 'path' column"), ("bad.jsonl", "bad.jsonl:2: bad manifest row"),
                       ("neg.csv", "neg.csv:3: label -3"), ("empty.csv", "lists no videos")):
        with pytest.raises(ValueError, match=says):
            read_manifest(tmp_path / name)


def test_skytimelapse_preparation_turns_nested_frame_folders_into_videos_and_caches_them(tmp_path):
    """datasets/skytimelapse/prepare.sh end to end, on the release's nesting (sky_train/<id>/<id>_<n>/*.jpg), with
    real ffmpeg and a tiny Wan VAE: one mp4 per frame folder of 17+ frames, then the latent cache. The script had
    ended at the first folder of folders (ls of no jpg failed under pipefail), before any video was made."""
    import subprocess
    import sys

    from PIL import Image

    sky = tmp_path / "sky_train"
    for clip, n in (("a/a_1", 17), ("a/a_2", 5), ("b/b_1", 18)):
        (sky / clip).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(np.full((30, 40, 3), 10 * i, np.uint8)).save(sky / clip / f"{i:04d}.jpg")
    tiny_vae("wan").save_pretrained(tmp_path / "vae")
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "SKY": str(sky), "OUT": str(tmp_path / "videos"), "VAE": str(tmp_path / "vae"),
           "CACHE": str(tmp_path / "cache"), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.run(["bash", str(root / "datasets" / "skytimelapse" / "prepare.sh"), "data.resolution=16"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "videos").iterdir()) == ["a_a_1.mp4", "b_b_1.mp4"]  # a_2: too short
    assert probe(tmp_path / "videos" / "b_b_1.mp4").num_frames == 18
    cache = LatentCache(tmp_path / "cache")
    assert len(cache) == 2 and cache.num_classes == 0 and tuple(cache[0]["x"].shape) == (4, 5, 2, 2)


def test_ucf101_preparation_writes_manifests_of_class_names(tmp_path):
    """Manifests of class names from the official split lists, their paths absolute: a relative --root had been
    written as given and read from the manifest's own folder (data/ucf101/data/UCF-101/...). A wrong --root or
    --splits, or a listed video that is not there, is a one-line error before a manifest is written."""
    import subprocess
    import sys

    from mfvideo.data.videos import read_manifest

    lists = tmp_path / "ucfTrainTestlist"
    lists.mkdir()
    (lists / "classInd.txt").write_text("1 ApplyEyeMakeup\r\n2 Basketball\r\n3 YoYo\r\n")  # the release's CRLF
    (lists / "trainlist01.txt").write_text("YoYo/v_YoYo_g08_c01.avi 3\r\nBasketball/v_Basketball_g08_c01.avi 2\r\n")
    (lists / "testlist01.txt").write_text("ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi\r\n")
    for rel in ("YoYo/v_YoYo_g08_c01.avi", "Basketball/v_Basketball_g08_c01.avi",
                "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi"):
        (tmp_path / "UCF-101" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "UCF-101" / rel).write_bytes(b"")
    script = Path(__file__).resolve().parents[1] / "datasets" / "ucf101" / "prepare.py"

    def prepare(root="UCF-101", splits=lists):
        return subprocess.run([sys.executable, str(script), "--root", root, "--splits", str(splits), "--out",
                               "data/ucf101"], capture_output=True, text=True, cwd=tmp_path)

    proc = prepare()  # --root relative to where the command runs, as a user types it
    assert proc.returncode == 0, proc.stderr
    rows, classes = read_manifest(tmp_path / "data" / "ucf101" / "train.csv")
    assert classes == ["Basketball", "YoYo"]
    root = tmp_path.resolve() / "UCF-101"
    assert rows == [(str(root / "YoYo/v_YoYo_g08_c01.avi"), 1), (str(root / "Basketball/v_Basketball_g08_c01.avi"), 0)]
    assert all(Path(p).is_file() for p, _ in rows)
    (lists / "testlist01.txt").write_text("Juggling/v_Juggling_g01_c01.avi\n")
    proc = prepare()
    assert proc.returncode == 1 and "class 'Juggling' is not in classInd.txt" in proc.stderr
    (lists / "testlist01.txt").write_text("YoYo/v_YoYo_g09_c01.avi\n")
    proc = prepare()
    assert proc.returncode == 1 and proc.stderr.strip() == (
        f"error: testlist01.txt: 1 of its 1 videos are not under --root {root}, the first "
        f"{root / 'YoYo/v_YoYo_g09_c01.avi'}")
    for bad, said in (({"root": "UCF101"}, "--root UCF101: not a folder"),
                      ({"splits": tmp_path}, f"{tmp_path / 'classInd.txt'}: missing (--splits is the folder")):
        proc = prepare(**bad)
        assert proc.returncode == 1 and said in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert rows == read_manifest(tmp_path / "data" / "ucf101" / "train.csv")[0]  # the failed runs left it as it was
    assert sorted(p.name for p in (tmp_path / "data" / "ucf101").iterdir()) == ["test.csv", "train.csv"]


def test_moving_digits_export_writes_class_folders_of_real_clips_and_refuses_bad_values_in_one_line(
        tmp_path, monkeypatch, capsys):
    """datasets/moving_digits/prepare.py writes <digit>/<index>.mp4 clips that read back as the rendered frames; a
    value no clip can have (0 frames, a digit larger than the frame) was a traceback, after the first files."""
    import runpy
    import sys

    from mfvideo.data.moving_digits import render_clip
    from mfvideo.data.video_io import read_video

    script = str(Path(__file__).resolve().parents[1] / "datasets" / "moving_digits" / "prepare.py")

    def prepare(out, *args):
        monkeypatch.setattr(sys, "argv", [script, "--out", str(out), "--num-clips", "3", "--num-frames", "6", *args])
        with pytest.raises(SystemExit) as stop:
            runpy.run_path(script, run_name="__main__")
            raise SystemExit(0)
        return stop.value.code, capsys.readouterr().err

    code, err = prepare(tmp_path / "mp4")
    assert code in (0, None), err
    for i in range(3):
        clip = render_clip(i, "test", 6, 16, 1, 8, 1.0)
        frames, fps = read_video(tmp_path / "mp4" / str(clip.label) / f"{i:05d}.mp4")
        want = (np.clip(clip.frames, 0, 1) * 255).astype(np.uint8)[..., None]  # (T, H, W) grey
        assert frames.shape == (6, 16, 16, 3) and fps == 6.0
        assert np.abs(frames.astype(int) - want.astype(int)).mean() < 4  # H.264 of the rendered clip
    for args, said in ((["--num-frames", "0"], "argument --num-frames: must be >= 1, got 0"),
                       (["--resolution", "4"], "error: digit_size 8 exceeds the frame resolution 4"),
                       (["--fps", "0"], "argument --fps: must be a finite number > 0")):
        code, err = prepare(tmp_path / "bad", *args)
        assert code == 2 and said in err.strip().splitlines()[-1], err  # argparse's usage, then the one line
    assert not (tmp_path / "bad").exists()


def test_class_names_of_a_manifest_reach_the_checkpoint_through_the_latent_cache(video_dir, tmp_path, capsys):
    """Named classes of a manifest are the model's id2label, trained on the videos directly or on their latent
    cache (the cache keeps the names)."""
    from mfvideo.cli import cache_latents as cache_cli
    from mfvideo.cli import train as train_cli
    from mfvideo.pipeline import MFVideoPipeline

    (video_dir / "list.csv").write_text("path,label\napple/a.mp4,fruit\nbanana/b.mp4,yellow fruit\n")
    common = [str(Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"), "data.kind=video_folder",
              f"data.manifest={video_dir / 'list.csv'}", "data.channels=3", "data.num_frames=4", "train.batch_size=2"]
    assert cache_cli.main([*common, "--out", str(tmp_path / "cache")]) == 0
    cache = LatentCache(tmp_path / "cache")
    assert cache.classes == ["fruit", "yellow fruit"] and cache.num_classes == 2
    for run, data in (("direct", []), ("cached run", ["data.kind=latent_cache", f"data.root={tmp_path / 'cache'}"])):
        assert train_cli.main([*common, *data, f"train.output_dir={tmp_path / run}", "train.max_steps=2",
                               "train.checkpoint_every=2"]) == 0
        last = tmp_path / run / "checkpoints" / "step_00000002"
        arg = f"'{last}'" if " " in run else str(last)  # a command to paste into a shell: a space quoted
        assert f"checkpoint: {last} (mfvideo-sample --checkpoint {arg} --out DIR;" in capsys.readouterr().out
        pipe = MFVideoPipeline.from_pretrained(tmp_path / run / "checkpoints" / "step_00000002")
        assert pipe.labels == {"0": "fruit", "1": "yellow fruit"}, run
        assert pipe.check_labels(["yellow fruit", "fruit"]).tolist() == [1, 0]
    # a cache of other clips than the config's is refused before anything is written (it would train a model that
    # the pipeline then runs on the config's window): by its manifest, or by its latents' shape
    from mfvideo.config import ConfigError
    from mfvideo.train.loop import train

    cached = [*common[1:], "data.kind=latent_cache", f"data.root={tmp_path / 'cache'}", "train.max_steps=1"]
    with pytest.raises(ConfigError, match=r"data.num_frames=8, but the latent cache .* was encoded with 4 .*"
                                          r"set data.num_frames=4"):
        train(load_config(common[0], [*cached, "data.num_frames=8", f"train.output_dir={tmp_path / 'no1'}"]))
    manifest = json.loads((tmp_path / "cache" / "manifest.json").read_text())
    del manifest["config"]  # a cache written without its settings: the latents' shape still tells
    (tmp_path / "cache" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match=r"holds latents of shape \(3, 4, 16, 16\), the config's codec .* makes "
                                          r"\(3, 8, 16, 16\)"):
        train(load_config(common[0], [*cached, "data.num_frames=8", f"train.output_dir={tmp_path / 'no2'}"]))
    assert not (tmp_path / "no1").exists() and not (tmp_path / "no2").exists()


# ---------------------------------------------------------------------------------------------- latent cache
def test_cache_interrupted_and_resumed_equals_uninterrupted_and_matches_on_the_fly(video_dir, tmp_path):
    from mfvideo.latents.vae import VideoVAECodec

    for f in ("corrupt.mp4", "short.mp4"):
        (video_dir / "banana" / f).unlink()
    write_counting_video(video_dir / "apple" / "c.mp4", 20)
    ds = VideoFolder.from_folder(video_dir, num_frames=9, resolution=64, train=True, seed=5)
    codec = VideoVAECodec(tiny_vae("wan"), "wan")
    full, part = tmp_path / "full", tmp_path / "part"
    cache_dataset(ds, codec, full, shard_size=2, progress=False)
    write_manifest(full, codec, len(ds), 2, images=False)
    cache_dataset(ds, codec, part, shard_size=2, progress=False, stop_after_shards=1)  # interrupted
    (part / ".shard_00001.safetensors.999.tmp").write_bytes(b"half")  # a crash leftover is ignored
    with pytest.raises(RuntimeError, match="1 of 2 shards"):
        write_manifest(part, codec, len(ds), 2, images=False)
    first = (part / "shard_00000.safetensors").stat().st_mtime_ns
    cache_dataset(ds, codec, part, shard_size=2, progress=False)  # resumed
    write_manifest(part, codec, len(ds), 2, images=False)
    assert (part / "shard_00000.safetensors").stat().st_mtime_ns == first  # finished shards kept
    for name in ("shard_00000.safetensors", "shard_00001.safetensors"):
        a, b = load_file(full / name), load_file(part / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    cache = LatentCache(full)
    for i in range(len(ds)):
        on_the_fly = codec.encode(ds[i]["x"][None])[0]  # epoch 0, same seed: the same clip window
        torch.testing.assert_close(cache[i]["x"], on_the_fly)
        assert cache[i]["y"] == ds[i]["y"]
    assert json.loads((full / "manifest.json").read_text())["latent_channels"] == 4


def test_a_cache_rerun_with_other_settings_is_refused_not_mixed_in(tmp_path, monkeypatch, capsys):
    """Re-running mfvideo-cache-latents after a settings fix (another resolution, VAE, item count) into the same
    folder kept the finished shards of the first settings beside the new ones, and the manifest described the
    second: a cache of two datasets, or latents of 8 x 8 claimed as 16 x 16. Now refused before anything is written,
    naming what differs; the same settings resume, also from another working folder (paths are compared absolute)."""
    from mfvideo.cli import cache_latents as cache_cli

    tiny = str(Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml")
    out = tmp_path / "cache"

    def cache(*overrides, limit="4", shard_size="2", out=str(out)):
        return cache_cli.main([tiny, "data.num_clips=6", *overrides, "--out", out, "--shard-size", shard_size,
                               "--limit", limit])

    assert cache() == 0
    before = {p: p.read_bytes() for p in sorted(out.rglob("*"))}
    for kw, said in (({"overrides": ["data.resolution=32"]}, "data.resolution: 16 there, 32 here"),
                     ({"limit": "6"}, "num_items: 4 there, 6 here"),
                     ({"shard_size": "3"}, "shard_size: 2 there, 3 here")):
        capsys.readouterr()
        with pytest.raises(SystemExit) as e:
            cache(*kw.pop("overrides", []), **kw)
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and said in err and "another --out" in err and len(err.splitlines()) == 1, err
        assert {p: p.read_bytes() for p in sorted(out.rglob("*"))} == before
    monkeypatch.chdir(tmp_path)
    assert cache(out="cache") == 0
    assert {p: p.read_bytes() for p in sorted(out.rglob("*"))} == before  # the same cache: nothing re-encoded
    assert LatentCache(out).manifest["num_items"] == 4


def test_a_dc_ae_image_model_caches_trains_exports_and_samples(tmp_path):
    """latents.kind=dc_ae: Sana's deterministic AutoencoderDC (diffusers' class, a tiny config) as the per-frame
    codec: the cache holds its latents times the config's scaling_factor with a zero std (no posterior), a model trains
    on it, and the exported pipeline folder decodes through the same AutoencoderDC."""
    from PIL import Image

    from mfvideo.cli import cache_latents as cache_cli
    from mfvideo.cli import export as export_cli
    from mfvideo.cli import train as train_cli
    from mfvideo.pipeline import MFVideoPipeline

    rng = np.random.default_rng(0)
    for c in ("ant", "zebra"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "imgs" / c / f"{i}.png")
    vae = tiny_vae("dc_ae")
    vae.save_pretrained(tmp_path / "vae")
    cfg = [str(Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"), "data.kind=image_folder",
           f"data.root={tmp_path / 'imgs'}", "data.num_frames=1", "data.channels=3", "data.resolution=32",
           "model.patch_size=2", "latents.kind=dc_ae", f"latents.path={tmp_path / 'vae'}", "train.batch_size=2"]
    assert cache_cli.main([*cfg, "--out", str(tmp_path / "cache")]) == 0
    shard = load_file(tmp_path / "cache" / "shard_00000.safetensors")
    pixels = torch.from_numpy(np.array(Image.open(tmp_path / "imgs" / "ant" / "0.png"))).float() / 127.5 - 1
    with torch.no_grad():
        want = vae.encode(pixels.permute(2, 0, 1)[None]).latent[0]  # the folder's first item: ant/0.png, 32 x 32
    torch.testing.assert_close(shard["mean"][0], want, atol=1e-5, rtol=1e-5)
    assert shard["mean"].shape[1:] == (4, 8, 8) and not shard["std"].any()
    assert train_cli.main([*cfg, "data.kind=latent_cache", f"data.root={tmp_path / 'cache'}",
                           f"train.output_dir={tmp_path / 'run'}", "train.max_steps=2", "train.checkpoint_every=2"]) == 0
    assert export_cli.main([str(tmp_path / "run"), "--out", str(tmp_path / "pipe")]) == 0
    pipe = MFVideoPipeline.from_pretrained(tmp_path / "pipe")
    assert type(pipe.vae).__name__ == "AutoencoderDC" and pipe.codec.spatial_factor == 4
    images = pipe(class_labels=["zebra"], output_type="np").frames
    assert images.shape == (1, 1, 32, 32, 3) and images.std() > 0


def test_imagenet_mode_from_an_image_folder_through_its_latent_cache(tmp_path):
    """The base mode's path (datasets/imagenet/prepare.sh, configs/imagenet_b2.yaml), small: an image folder cached
    through a real diffusers AutoencoderKL (posterior moments), a class-conditional image model trained on the cache,
    sampled by class name as PNGs, decoded by the same VAE."""
    import imageio.v2 as imageio
    from PIL import Image

    from mfvideo.cli import cache_latents as cache_cli
    from mfvideo.cli import sample as sample_cli
    from mfvideo.cli import train as train_cli

    rng = np.random.default_rng(0)
    for c in ("zebra", "ant"):
        (tmp_path / "imgs" / "train" / c).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(tmp_path / "imgs" / "train" / c / f"{i}.png")
    tiny_vae("image_vae").save_pretrained(tmp_path / "vae")
    cfg = [str(Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"), "data.kind=image_folder",
           f"data.root={tmp_path / 'imgs'}", "data.num_frames=1", "data.channels=3", "model.patch_size=2",
           "latents.kind=image_vae", f"latents.path={tmp_path / 'vae'}", "train.batch_size=2"]
    assert cache_cli.main([*cfg, "--out", str(tmp_path / "cache")]) == 0
    cache = LatentCache(tmp_path / "cache")
    assert cache.images and cache.classes == ["ant", "zebra"] and tuple(cache[0]["x"].shape) == (4, 8, 8)
    assert train_cli.main([*cfg, "data.kind=latent_cache", f"data.root={tmp_path / 'cache'}",
                           f"train.output_dir={tmp_path / 'run'}", "train.max_steps=2", "train.checkpoint_every=2"]) == 0
    out = tmp_path / "samples"
    assert sample_cli.main(["--checkpoint", str(tmp_path / "run" / "checkpoints" / "step_00000002"), "--classes",
                            "zebra", "ant", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["image_000_class1_zebra.png", "image_001_class0_ant.png"]
    assert imageio.imread(out / "image_000_class1_zebra.png").shape == (16, 16, 3)
    # an image model's --grid is a square-ish sheet, read row by row (a column of 5 would have been 5 rows high)
    assert sample_cli.main(["--checkpoint", str(tmp_path / "run" / "checkpoints" / "step_00000002"), "--num-clips",
                            "5", "--grid", "--out", str(tmp_path / "five")]) == 0
    sheet = imageio.imread(tmp_path / "five" / "grid.png")
    assert sheet.shape == (2 * 50 + 2, 3 * 50 + 2, 3)  # 2 rows of 3 cells, each 16 px x 3 and 2 px of white
    images = [imageio.imread(f) for f in sorted((tmp_path / "five").glob("image_*.png"))]
    for k, image in enumerate(images):
        r, c = divmod(k, 3)
        assert np.array_equal(sheet[2 + 50 * r : 50 * r + 50 : 3, 2 + 50 * c : 50 * c + 50 : 3], image)
    assert (sheet[52:100, 102:150] == 255).all()  # the sixth cell: white

    # post-training an image model: its clips one frame each (before session 51 the posterior draws of the cache
    # reached the one-step jump as (B, C, H, W) and stopped it)
    from mfvideo.cli import post_train as post_cli
    from mfvideo.pipeline import MFVideoPipeline

    ckpt = tmp_path / "run" / "checkpoints" / "step_00000002"
    assert post_cli.main([str(ckpt), "--out", str(tmp_path / "post"), "--steps", "2", "--clips", "6"]) == 0
    before, after = (MFVideoPipeline.from_pretrained(p) for p in (ckpt, tmp_path / "post"))
    moved = [not torch.equal(a, b) for a, b in zip(before.transformer.state_dict().values(),
                                                   after.transformer.state_dict().values())]
    assert any(moved) and after(class_labels=["ant"]).images.shape == (1, 16, 16, 3)

    # FID of the image model: single images by default, the real ones read from the folder the cache was encoded
    # from (its pixels, ADM-cropped and unflipped), not from the latents; its training split, having no held-out one
    import importlib.util

    from test_eval import TinyInception

    from mfvideo.data import sample_order
    from mfvideo.eval.networks import FeatureNetwork
    from mfvideo.frames import pixels_to_uint8

    spec = importlib.util.spec_from_file_location("evaluate", Path(__file__).resolve().parents[1] / "scripts" / "evaluate.py")
    evaluate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(evaluate)
    torch.jit.script(TinyInception()).save(str(tmp_path / "inception.pt"))
    run = ["--checkpoint", str(tmp_path / "run" / "checkpoints" / "step_00000002"), "--network",
           str(tmp_path / "inception.pt"), "--kind", "inception", "--num-clips", "4", "--batch-size", "2",
           "--work", str(tmp_path / "eval"), "--cache", str(tmp_path / "stats"), "--out", str(tmp_path / "fid.json")]
    assert evaluate.main(run) == 0
    result = json.loads((tmp_path / "fid.json").read_text())
    assert result["num_generated"] == 4 and result["protocol"]["frames"] == 1 and result["protocol"]["split"] == "train"
    folder = ImageFolder(tmp_path / "imgs", resolution=16)
    taken = sample_order(load_config(cfg[0], cfg[1:]).data, len(folder))[:4]  # the fair sample of 4 the script takes
    pixels = torch.stack([folder[int(i)]["x"] for i in taken])[:, :, None]  # (4, 3, 1, 16, 16)
    feats = FeatureNetwork(str(tmp_path / "inception.pt")).features(pixels_to_uint8(pixels))
    (stats,) = (tmp_path / "stats").glob("*.npz")
    np.testing.assert_allclose(np.load(stats)["mu"], feats.mean(0), rtol=1e-4)  # float32 features, batched
    np.testing.assert_allclose(np.load(stats)["sigma"], np.cov(feats, rowvar=False), rtol=1e-4, atol=1e-8)
    # reference statistics of another network (3-d, the network's 16-d) are refused before any image is made
    np.savez(tmp_path / "ref.npz", mu=np.zeros(3), sigma=np.eye(3))
    with pytest.raises(SystemExit):
        evaluate.main([*run[:-6], "--work", str(tmp_path / "eval2"), "--real-stats", str(tmp_path / "ref.npz")])
    assert not (tmp_path / "eval2").exists()


def test_a_latent_cache_holds_only_its_labels_and_reads_each_item_s_rows(tmp_path, monkeypatch):
    """The cache was read whole into every process at the start (ImageNet's moments and flips: 82 GB a process);
    an item now reads its own rows from its memory-mapped shard. The items are those of the shards, whichever order
    and however few files stay open; the dataset holds no tensor but the labels, and pickles (to a spawned worker)
    without its open files."""
    import pickle

    import mfvideo.data.latent_cache as lc
    from mfvideo.latents.vae import ImageVAECodec

    ds = MovingDigits(num_frames=1, resolution=16, digit_size=8, channels=3, num_clips=10)
    codec = ImageVAECodec(tiny_vae("image_vae"))
    cache_dataset(ds, codec, tmp_path, shard_size=3, images=True, progress=False)  # 4 shards
    write_manifest(tmp_path, codec, 10, 3, images=True)
    shards = [load_file(tmp_path / f"shard_{s:05d}.safetensors") for s in range(4)]
    monkeypatch.setattr(lc, "OPEN_SHARDS", 2)
    cache = LatentCache(tmp_path, seed=0, hflip=False)
    for i in (9, 0, 5, 3, 8, 1):  # across shards, more than two open files would hold
        s, j = divmod(i, 3)
        eps = np.random.default_rng([0, 0, i]).standard_normal(shards[s]["mean"][j].shape).astype(np.float32)
        want = (shards[s]["mean"][j] + shards[s]["std"][j] * torch.from_numpy(eps) - codec.shift) * codec.scale
        assert cache[i]["y"] == int(shards[s]["labels"][j]) and torch.equal(cache[i]["x"], want)
        assert len(cache._open) <= 2

    def tensors(obj, seen=None) -> int:  # bytes of the tensors the dataset object reaches
        seen = seen if seen is not None else set()
        if id(obj) in seen:
            return 0
        seen.add(id(obj))
        if isinstance(obj, torch.Tensor):
            return obj.nbytes
        items = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, (list, tuple)) else (
            vars(obj).values() if hasattr(obj, "__dict__") and not isinstance(obj, type) else ())
        return sum(tensors(v, seen) for v in items)

    assert tensors(cache) <= 10 * 8  # the labels at most (int64), no latents
    copy = pickle.loads(pickle.dumps(cache))
    assert not copy._open and torch.equal(copy[4]["x"], LatentCache(tmp_path, seed=0, hflip=False)[4]["x"])


def test_a_truncated_cache_shard_is_one_line_naming_it_and_the_way_to_rebuild_it(tmp_path, capsys):
    """A shard cut short (a copy interrupted, a full disk elsewhere) stopped training with safetensors' traceback
    ("incomplete metadata, file not fully covered"): one line, the file and how to rebuild it (a re-run of the cache
    command encodes the missing shards only, tested here)."""
    from mfvideo.cli import cache_latents as cache_cli
    from mfvideo.cli import train as train_cli

    cfg = [str(Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"), "data.num_clips=12"]
    assert cache_cli.main([*cfg, "--out", str(tmp_path / "cache"), "--shard-size", "4"]) == 0
    shard = tmp_path / "cache" / "shard_00001.safetensors"
    whole = shard.read_bytes()
    shard.write_bytes(whole[:1000])
    capsys.readouterr()
    run = [*cfg, "data.kind=latent_cache", f"data.root={tmp_path / 'cache'}", f"train.output_dir={tmp_path / 'run'}",
           "train.max_steps=1", "train.batch_size=4"]
    with pytest.raises(SystemExit) as stopped:
        train_cli.main(run)
    assert stopped.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip() and not line.startswith("WARNING")]
    assert len(err) == 1 and f"{shard}: unreadable (" in err[0] and "delete it and re-run mfvideo-cache-latents" in err[0]
    shard.unlink()
    assert cache_cli.main([*cfg, "--out", str(tmp_path / "cache"), "--shard-size", "4"]) == 0
    assert shard.read_bytes() == whole and train_cli.main(run) == 0


def test_image_cache_stores_moments_and_flips(tmp_path):
    from mfvideo.latents.vae import ImageVAECodec

    ds = MovingDigits(num_frames=1, resolution=16, digit_size=8, channels=3, num_clips=6)
    codec = ImageVAECodec(tiny_vae("image_vae"))
    cache_dataset(ds, codec, tmp_path, shard_size=4, images=True, progress=False)
    write_manifest(tmp_path, codec, 6, 4, images=True)
    shard = load_file(tmp_path / "shard_00000.safetensors")
    assert {"mean", "std", "mean_flip", "std_flip"} <= shard.keys() and (shard["std"] > 0).all()
    cache = LatentCache(tmp_path, seed=0)
    draws = torch.stack([cache[0 + 6 * e]["x"] for e in range(20)])  # 20 epochs of item 0
    assert draws.std(0).mean() > 0  # a fresh posterior draw each epoch
    mean = shard["mean"][0] * codec.scale
    mean_f = shard["mean_flip"][0] * codec.scale
    near = [min((d - mean).abs().mean(), (d - mean_f).abs().mean()) for d in draws]
    assert max(near) < 3 * shard["std"][0].mean() * codec.scale
    # data.hflip decides through build_dataset: off, every draw is of the unflipped view (before session 51 a
    # cache flipped half the draws whatever the config said: text, digits, anything with a handedness)
    from safetensors.torch import save_file

    from mfvideo.config import DataConfig
    from mfvideo.data import build_dataset

    save_file({**shard, "std": torch.zeros_like(shard["std"]), "std_flip": torch.zeros_like(shard["std_flip"])},
              tmp_path / "shard_00000.safetensors")  # a posterior without spread: each draw is one view's mean
    for hflip in (False, True):
        cache = build_dataset(DataConfig(kind="latent_cache", root=str(tmp_path), hflip=hflip))
        views = {"mean" if torch.allclose(cache[6 * e]["x"], mean) else "flip" if torch.allclose(cache[6 * e]["x"], mean_f)
                 else "other" for e in range(20)}
        assert views == ({"mean", "flip"} if hflip else {"mean"})
