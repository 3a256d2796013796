import time
import zipfile

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from PIL import Image

from worldflow.data import DataConfig, build_dataset
from worldflow.data.synthetic import SHAPES, MovingShapes, SyntheticImages, bounce
from worldflow.errors import ConfigError, DataError


def check_item(dataset, index: int = 0) -> dict:
    item = dataset[index]
    x, y = item["x"], item["y"]
    assert x.dtype == torch.float32 and tuple(x.shape) == tuple(dataset.sample_shape)
    assert x.min() >= -1.0 and x.max() <= 1.0
    assert y.dtype == torch.int64 and y.ndim == 0
    assert 0 <= int(y) < max(dataset.num_classes, 1)
    return item


# --- synthetic ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, frames, channels, shape",
    [
        ("synthetic_images", 1, 3, (3, 16, 16)),
        ("synthetic_images", 1, 1, (1, 16, 16)),
        ("moving_shapes", 4, 3, (4, 3, 16, 16)),
        ("moving_shapes", 1, 1, (1, 16, 16)),
    ],
)
def test_synthetic_shapes_and_range(name, frames, channels, shape):
    data = build_dataset(
        DataConfig(name=name, image_size=16, frames=frames, channels=channels, num_samples=50)
    )
    assert len(data) == 50 and data.num_classes == 10 and data.sample_shape == shape
    for i in range(0, 50, 7):
        check_item(data, i)
    x = torch.stack([data[i]["x"] for i in range(20)])
    assert x.max() - x.min() > 1.0  # uses the range, not a sliver of it
    with pytest.raises(IndexError):
        data[50]


@pytest.mark.parametrize("name, frames", [("synthetic_images", 1), ("moving_shapes", 3)])
def test_synthetic_items_are_a_function_of_seed_and_index(name, frames):
    make = lambda seed: build_dataset(DataConfig(name=name, image_size=16, frames=frames, seed=seed))
    a, b, other_seed = make(0), make(0), make(1)
    torch.manual_seed(123)  # the global RNG must not matter
    first = a[5]["x"]
    torch.manual_seed(456)
    np.random.seed(456)
    assert torch.equal(first, b[5]["x"])
    assert torch.equal(a[7]["x"], a[7]["x"])
    assert not torch.equal(first, a[6]["x"])
    assert not torch.equal(first, other_seed[5]["x"])
    assert [int(a[i]["y"]) for i in range(12)] == [i % 10 for i in range(12)]  # balanced prefixes


def test_synthetic_images_are_fast():
    data = SyntheticImages(256, 32)
    start = time.perf_counter()
    for i in range(256):
        data[i]
    assert time.perf_counter() - start < 1.0


def test_synthetic_classes_differ_and_are_linearly_learnable():
    data = SyntheticImages(1200, 16)
    x = torch.stack([data[i]["x"] for i in range(1200)]).flatten(1)
    y = torch.tensor([int(data[i]["y"]) for i in range(1200)])
    means = torch.stack([x[:1000][y[:1000] == c].mean(0) for c in range(10)])
    gaps = torch.cdist(means, means) + torch.eye(10) * 1e3
    assert gaps.min() > 1.0  # every pair of per-class mean images is distinct
    # intra-class variation: two items of one class are never the same picture
    assert not torch.equal(x[0], x[10])
    # a ridge-regression probe on raw pixels: the palette is linear, the shape only partly (chance = 0.1)
    features = torch.cat([x, torch.ones(len(x), 1)], 1)
    targets = torch.nn.functional.one_hot(y, 10).float()
    a, t = features[:1000], targets[:1000]
    weights = torch.linalg.solve(a.T @ a + 10.0 * torch.eye(a.shape[1]), a.T @ t)
    predicted = (features[1000:] @ weights).argmax(1)
    assert (predicted == y[1000:]).float().mean() > 0.3
    assert ((predicted // len(SHAPES)) == (y[1000:] // len(SHAPES))).float().mean() > 0.95


def test_bounce_reflects_off_the_walls():
    t = np.arange(30, dtype=np.float64)
    path = bounce(np.array([2.0]), np.array([1.5]), t, 1.0, 9.0)[:, 0]  # (T,)
    assert path.min() >= 1.0 and path.max() <= 9.0
    np.testing.assert_allclose(path[:5], [2.0, 3.5, 5.0, 6.5, 8.0])  # linear until the wall
    np.testing.assert_allclose(path[5:7], [8.5, 7.0])  # 9.5 reflects to 8.5, then moves back
    assert np.abs(np.diff(path)).max() <= 1.5 + 1e-9  # constant speed throughout


def test_moving_shapes_move_along_their_trajectories():
    data = MovingShapes(64, 32, frames=6)
    checked = linear_triples = 0
    for i in range(64):
        clip = data[i]["x"]  # (T, C, H, W)
        assert (clip[1:] - clip[:-1]).abs().amax(dim=(1, 2, 3)).min() > 0  # every frame differs from the last
        scene = data.scene(i)
        if len(scene.sprites) != 1:
            continue
        background = torch.from_numpy(scene.background * 2 - 1).float()[:, None, None]
        foreground = ((clip - background).abs() > 1e-4).any(dim=1).float()  # (T, H, W)
        ys, xs = torch.meshgrid(torch.arange(32) + 0.5, torch.arange(32) + 0.5, indexing="ij")
        area = foreground.sum(dim=(1, 2))
        centroid = torch.stack(
            [(foreground * xs).sum((1, 2)) / area, (foreground * ys).sum((1, 2)) / area], 1
        )
        # the pixel centroid follows the analytic centre up to a constant (the triangle's centroid is not its
        # centre) and rasterisation error, which is well under the 1.3+ px a shape moves per frame
        offset = centroid.numpy() - data.centres(scene.sprites[0])
        assert np.abs(offset - offset[0]).max() < 1.0
        # between bounces (analytic second difference 0) the pixels move in a straight line at constant speed
        analytic = data.centres(scene.sprites[0])
        linear = np.all(np.abs(np.diff(analytic, n=2, axis=0)) < 1e-9, axis=1)  # (T - 2,) triples of frames
        pixels = centroid.numpy()
        assert np.abs(np.diff(pixels, n=2, axis=0)[linear]).max(initial=0) < 1.6  # 3 rasterised centroids
        assert np.linalg.norm(np.diff(pixels, axis=0)[:-1][linear], axis=1).min(initial=9) > 1.0
        linear_triples += int(linear.sum())
        checked += 1
    assert checked >= 10 and linear_triples >= 30


def test_moving_shapes_frame_stride_skips_frames():
    dense = MovingShapes(8, 16, frames=7, seed=3)
    strided = MovingShapes(8, 16, frames=4, seed=3, frame_stride=2)
    assert torch.equal(strided[2]["x"], dense[2]["x"][::2])
    single = MovingShapes(8, 16, frames=1, seed=3)
    assert torch.equal(single[2]["x"], dense[2]["x"][0])


# --- image folder -------------------------------------------------------------------------------------


def write_png(path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def solid(h: int, w: int, rgb) -> np.ndarray:
    return np.broadcast_to(np.array(rgb, np.uint8), (h, w, 3)).copy()


def test_image_folder_labels_values_and_crop(tmp_path):
    write_png(tmp_path / "b_dogs" / "1.png", solid(16, 16, (255, 0, 0)))
    write_png(tmp_path / "a_cats" / "x.png", solid(16, 16, (0, 255, 0)))
    wide = np.concatenate(
        [solid(20, 10, (0, 0, 255)), solid(20, 20, (255, 255, 255)), solid(20, 10, (0, 0, 255))], 1
    )
    write_png(tmp_path / "b_dogs" / "nested" / "2.jpg", wide)  # 40x20: the crop keeps the white middle
    (tmp_path / "b_dogs" / "notes.txt").write_text("not an image")
    data = build_dataset(DataConfig(name="image_folder", root=str(tmp_path), image_size=8))
    assert len(data) == 3 and data.num_classes == 2 and data.class_names == ["a_cats", "b_dogs"]
    items = [check_item(data, i) for i in range(3)]
    assert [int(it["y"]) for it in items] == [0, 1, 1]
    np.testing.assert_allclose(items[0]["x"].mean((1, 2)), [-1, 1, -1], atol=1e-5)  # green, scaled to [-1, 1]
    np.testing.assert_allclose(items[1]["x"].mean((1, 2)), [1, -1, -1], atol=1e-5)
    assert items[2]["x"].min() > 0.9  # JPEG white, no blue border left after the center crop


def test_image_folder_unlabelled_and_grey(tmp_path):
    write_png(tmp_path / "a.png", solid(12, 12, (255, 255, 255)))
    write_png(tmp_path / "b.webp", solid(12, 12, (0, 0, 0)))
    data = build_dataset(DataConfig(name="image_folder", root=str(tmp_path), image_size=12, channels=1))
    assert len(data) == 2 and data.num_classes == 0 and data.sample_shape == (1, 12, 12)
    assert torch.equal(check_item(data, 0)["x"], torch.ones(1, 12, 12))
    assert int(data[1]["y"]) == 0 and data[1]["x"].max() < -0.95


def test_image_folder_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="missing: folder does not exist"):
        build_dataset(DataConfig(name="image_folder", root=str(tmp_path / "missing")))
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(DataError, match="empty: no .png"):
        build_dataset(DataConfig(name="image_folder", root=str(tmp_path / "empty")))
    write_png(tmp_path / "ok" / "c" / "good.png", solid(10, 12, (1, 2, 3)))
    (tmp_path / "ok" / "c" / "broken.png").write_bytes(b"\x89PNG not really")
    data = build_dataset(
        DataConfig(name="image_folder", root=str(tmp_path / "ok"), image_size=10, resize=False)
    )
    with pytest.raises(DataError, match="broken.png"):
        data[0]
    with pytest.raises(DataError, match=r"good.png: frames are 12x10.*10x10"):
        data[1]


# --- video folder -------------------------------------------------------------------------------------


def counting_frames(n: int, size: int = 8, channels: int = 3) -> np.ndarray:
    """(n, size, size, channels) uint8 where frame i is filled with the value 10 * i."""
    return np.repeat(np.arange(n, dtype=np.uint8) * 10, size * size * channels).reshape(
        n, size, size, channels
    )


def frame_ids(x: torch.Tensor) -> list[int]:
    """Which counting_frames() frames a clip (T, C, H, W) in [-1, 1] holds."""
    return [round((float(f.mean()) + 1) * 127.5 / 10) for f in x]


def test_video_folder_npy_npz_clips_and_stride(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "walk").mkdir()
    np.save(tmp_path / "run" / "a.npy", counting_frames(10))
    np.savez_compressed(tmp_path / "walk" / "b.npz", frames=counting_frames(6))
    np.save(tmp_path / "walk" / "short.npy", counting_frames(4))
    with pytest.warns(UserWarning, match="short.npy"):
        data = build_dataset(
            DataConfig(name="video_folder", root=str(tmp_path), image_size=8, frames=3, frame_stride=2)
        )
    assert data.num_classes == 2 and data.sample_shape == (3, 3, 8, 8)
    assert len(data) == (10 - 4) + (6 - 4)  # every start from which 5 source frames fit
    assert frame_ids(check_item(data, 0)["x"]) == [0, 2, 4]
    assert frame_ids(data[5]["x"]) == [5, 7, 9]
    assert frame_ids(data[7]["x"]) == [1, 3, 5] and int(data[7]["y"]) == 1
    assert torch.equal(data[3]["x"], data[3]["x"])


def test_video_folder_decoded_files_grey_single_frames_and_resize(tmp_path):
    iio.imwrite(tmp_path / "c.gif", counting_frames(6, 16), duration=50, loop=0)
    iio.imwrite(tmp_path / "d.mp4", counting_frames(6, 16), fps=10)
    data = build_dataset(
        DataConfig(name="video_folder", root=str(tmp_path), image_size=8, frames=2, frame_stride=3)
    )
    assert data.num_classes == 0 and len(data) == 3 + 3
    assert frame_ids(check_item(data, 2)["x"]) == [2, 5]  # gif (sorted first), exact
    assert frame_ids(data[4]["x"]) == [1, 4]  # mp4: lossy, but close enough to round right
    grey = build_dataset(DataConfig(name="video_folder", root=str(tmp_path), image_size=8, channels=1))
    assert grey.sample_shape == (1, 8, 8) and len(grey) == 12
    assert frame_ids(check_item(grey, 3)["x"][None]) == [3]


def test_video_folder_errors_name_the_file(tmp_path):
    cfg = lambda root, **kw: DataConfig(name="video_folder", root=str(root), image_size=8, frames=2, **kw)
    with pytest.raises(DataError, match="nowhere"):
        build_dataset(cfg(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="no .mp4"):
        build_dataset(cfg(tmp_path))
    np.save(tmp_path / "flat.npy", np.zeros((5, 8, 8), np.uint8))
    with pytest.raises(DataError, match=r"flat.npy: array has shape \(5, 8, 8\)"):
        build_dataset(cfg(tmp_path))
    (tmp_path / "flat.npy").unlink()
    np.save(tmp_path / "rgba.npy", np.zeros((5, 8, 8, 4), np.uint8))
    with pytest.raises(DataError, match="rgba.npy: array has 4 channels"):
        build_dataset(cfg(tmp_path))
    (tmp_path / "rgba.npy").unlink()
    np.save(tmp_path / "big.npy", np.zeros((5, 9, 9, 3), np.uint8))
    with pytest.raises(DataError, match="big.npy: frames are 9x9"):
        build_dataset(cfg(tmp_path, resize=False))
    (tmp_path / "big.npy").unlink()
    np.savez(tmp_path / "keys.npz", video=np.zeros((5, 8, 8, 3), np.uint8))
    with pytest.raises(DataError, match=r"keys.npz: no \"frames\" array.*video"):
        build_dataset(cfg(tmp_path))
    (tmp_path / "keys.npz").unlink()
    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    with pytest.raises(DataError, match="bad.mp4: cannot read video"):
        build_dataset(cfg(tmp_path))
    (tmp_path / "bad.mp4").unlink()
    np.save(tmp_path / "short.npy", np.zeros((1, 8, 8, 3), np.uint8))
    with (
        pytest.raises(DataError, match="no video is long enough"),
        pytest.warns(UserWarning, match="short.npy"),
    ):
        build_dataset(cfg(tmp_path))
    (tmp_path / "short.npy").unlink()
    nan = np.full((4, 8, 8, 3), 0.5, np.float32)
    nan[3, 0, 0, 0] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    data = build_dataset(cfg(tmp_path))
    assert torch.allclose(data[0]["x"], torch.zeros(2, 3, 8, 8))  # float [0, 1] input
    with pytest.raises(DataError, match="nan.npy: frames \\[2, 3\\] hold NaN"):
        data[2]


def test_npz_header_is_read_without_the_array(tmp_path):
    np.savez_compressed(tmp_path / "v.npz", frames=counting_frames(7))
    with zipfile.ZipFile(tmp_path / "v.npz") as archive:
        assert archive.namelist() == ["frames.npy"]
    data = build_dataset(DataConfig(name="video_folder", root=str(tmp_path), image_size=8, frames=7))
    assert len(data) == 1 and frame_ids(data[0]["x"]) == list(range(7))


# --- config -------------------------------------------------------------------------------------------


def test_config_errors_name_the_key():
    with pytest.raises(
        ConfigError, match=r"'imagenet'.*image_folder.*moving_shapes.*synthetic_images.*video_folder"
    ):
        build_dataset(DataConfig(name="imagenet"))
    with pytest.raises(ConfigError, match="data.root"):
        build_dataset(DataConfig(name="video_folder"))
    with pytest.raises(ConfigError, match="data.channels=4"):
        build_dataset(DataConfig(name="synthetic_images", channels=4))
    with pytest.raises(ConfigError, match="data.num_classes=50"):
        build_dataset(DataConfig(name="moving_shapes", num_classes=50))
    with pytest.raises(ConfigError, match="data.frames=4"):
        build_dataset(DataConfig(name="synthetic_images", frames=4))


def test_crop_window_turns_fractions_into_pixels():
    from worldflow.data.images import crop_window

    assert crop_window(256, 320, None) == (slice(0, 256), slice(0, 320))
    assert crop_window(256, 320, [0.0, 0.25, 0.7, 0.5]) == (slice(0, 179), slice(80, 240))
    # the same box on SimplerEnv's 512x640 frames keeps the same part of the picture
    assert crop_window(512, 640, [0.0, 0.25, 0.7, 0.5]) == (slice(0, 358), slice(160, 480))
    with pytest.raises(ConfigError, match="keeps no pixel of a 4x4"):
        crop_window(4, 4, [0.0, 0.0, 0.1, 1.0])
    with pytest.raises(ConfigError, match=r"robot\.data\.crop=\[0\.0, 0\.5, 1\.0, 0\.6\]"):
        crop_window(256, 320, [0.0, 0.5, 1.0, 0.6])
    with pytest.raises(ConfigError, match="robot.data.crop"):
        crop_window(256, 320, [0.0, 0.0, float("nan"), 1.0])
