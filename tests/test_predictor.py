"""The prediction API: class names, image reading, tiling and blending, statistics, palette."""

import json
import os

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin

from gsnet import raster_io
from gsnet.checkpoint import GSNetCheckpointer
from gsnet.predictor import (
    ImageReadError,
    Prediction,
    Predictor,
    RasterImage,
    array_tile_reader,
    label_palette,
    parse_class_names,
    read_image,
    tile_starts,
    tile_weights,
)
from gsnet.raster_io import RasterScene, parse_bands

CLASSES = ["building", "road", "tree"]


def _image(height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


class PixelwiseModel:
    """Stands in for GSNet: each tile's class scores are a fixed function of its pixels, so any
    correct tiling and blending must reproduce ``expected`` exactly (up to rounding)."""

    def __init__(self):
        self.batch_sizes = []

    def eval(self):
        return self

    @staticmethod
    def expected(pixels, num_classes):
        values = torch.from_numpy(pixels.transpose(2, 0, 1).copy()).float() / 255
        return torch.stack([values[i % 3] * (1 + i) / num_classes for i in range(num_classes)])

    def __call__(self, batched_inputs, class_names):
        self.batch_sizes.append(len(batched_inputs))
        return [
            {"sem_seg": self.expected(x["image"].numpy().transpose(1, 2, 0), len(class_names))}
            for x in batched_inputs
        ]


@pytest.fixture(scope="module")
def weights(toy_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("weights")
    GSNetCheckpointer(toy_model, save_dir=str(folder)).save("model")
    return str(folder / "model.pth")


@pytest.fixture(scope="module")
def predictor(repo_root, weights):
    config = os.path.join(repo_root, "configs", "toy.yaml")
    return Predictor(config, weights, device="cpu", progress=False)


# ---------------------------------------------------------------------- class names
def test_class_names_from_list_string_and_json(tmp_path):
    path = tmp_path / "classes.json"
    path.write_text(json.dumps(CLASSES))
    assert parse_class_names(CLASSES) == CLASSES
    assert parse_class_names(" building, road ,tree") == CLASSES
    assert parse_class_names(str(path)) == CLASSES


@pytest.mark.parametrize(
    "names, message",
    [
        ("", "No class names"),
        (" , ", "No class names"),
        ([], "No class names"),
        ("building,,road", "is empty"),
        (["building", " "], "is empty"),
        ("building,road,Building", "given twice"),
    ],
)
def test_bad_class_names_are_refused(names, message):
    with pytest.raises(ValueError, match=message):
        parse_class_names(names)


# ---------------------------------------------------------------------- tiling
@pytest.mark.parametrize("length, tile, overlap", [(50, 64, 16), (64, 64, 16), (300, 64, 16)])
def test_tiles_cover_the_side_and_stay_inside(length, tile, overlap):
    starts = tile_starts(length, tile, overlap)
    size = min(tile, length)
    covered = np.zeros(length, bool)
    for start in starts:
        assert 0 <= start and start + size <= length
        covered[start : start + size] = True
    assert covered.all()
    assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:]))


def test_ramps_of_two_neighbouring_tiles_sum_to_one():
    first = tile_weights(0, 64, 112, 16)
    second = tile_weights(48, 64, 112, 16)
    np.testing.assert_allclose(first[48:] + second[:16], 1.0, rtol=1e-6)
    assert first[0] == 1 and second[-1] == 1  # scene edges keep full weight


@pytest.mark.parametrize(
    "shape, tile_size, overlap, batch_size",
    [((150, 97), 64, 16, 4), ((150, 97), 48, 0, 1), ((150, 97), 40, 30, 3), ((40, 300), 64, 8, 2)],
)
def test_blending_reproduces_a_tiling_independent_result(shape, tile_size, overlap, batch_size):
    pixels = _image(*shape)
    model = PixelwiseModel()
    predictor = Predictor.from_model(
        model, tile_size=tile_size, tile_overlap=overlap, batch_size=batch_size, progress=False
    )
    prediction = predictor(pixels, CLASSES)
    expected = PixelwiseModel.expected(pixels, len(CLASSES)).numpy()
    np.testing.assert_allclose(prediction.scores, expected, atol=1e-6)
    assert len(model.batch_sizes) > 1 and max(model.batch_sizes) <= batch_size
    assert (prediction.labels == prediction.scores.argmax(0)).all()


def test_labels_without_kept_scores_are_the_same():
    pixels = _image(90, 130, seed=1)
    predictor = Predictor.from_model(PixelwiseModel(), tile_size=32, progress=False)
    kept = predictor(pixels, CLASSES)
    labels_only = predictor(pixels, CLASSES, keep_scores=False)
    assert labels_only.scores is None
    np.testing.assert_array_equal(labels_only.labels, kept.labels)


def test_ties_go_to_the_first_class():
    class ConstantModel(PixelwiseModel):
        def __call__(self, batched_inputs, class_names):
            return [
                {"sem_seg": torch.full((len(class_names), 20, 30), 0.5)} for _ in batched_inputs
            ]

    predictor = Predictor.from_model(ConstantModel(), tile_size=32, progress=False)
    prediction = predictor(np.zeros((20, 30, 3), np.uint8), ["a", "b", "c", "d"])
    assert prediction.labels.dtype == np.uint8
    assert (prediction.labels == 0).all()


@pytest.mark.parametrize("sliding_window", [False, True])
def test_an_image_within_one_tile_equals_one_pass(predictor, sliding_window):
    pixels = _image(70, 93, seed=2)
    model = predictor.model
    model.sliding_window = sliding_window
    try:
        prediction = predictor(pixels, CLASSES)
        with torch.no_grad():
            image = torch.from_numpy(pixels.transpose(2, 0, 1).copy())
            one_pass = model([{"image": image, "height": 70, "width": 93}], CLASSES)
    finally:
        model.sliding_window = False
    np.testing.assert_array_equal(prediction.scores, one_pass[0]["sem_seg"].numpy())


def test_large_image_is_predicted_tile_by_tile(predictor):
    assert predictor.tile_size == 96  # the toy config's INPUT.MIN_SIZE_TEST
    pixels = _image(150, 200, seed=3)
    prediction = predictor(pixels, CLASSES)
    assert prediction.scores.shape == (3, 150, 200) and prediction.scores.dtype == np.float32
    assert 0 <= prediction.scores.min() and prediction.scores.max() <= 1
    assert prediction.labels.shape == (150, 200)
    assert (prediction.labels == prediction.scores.argmax(0)).all()
    assert prediction.class_names == CLASSES and prediction.crs is None


def test_rejects_images_that_are_not_uint8_rgb():
    predictor = Predictor.from_model(PixelwiseModel(), tile_size=16, progress=False)
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        predictor(np.zeros((10, 10, 3), np.float32), CLASSES)
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        predictor(np.zeros((10, 10), np.uint8), CLASSES)


def test_missing_weights_file_is_reported(repo_root, tmp_path):
    config = os.path.join(repo_root, "configs", "toy.yaml")
    with pytest.raises(FileNotFoundError, match="Weights file not found"):
        Predictor(config, str(tmp_path / "nope.pth"), device="cpu")


def test_bad_tiling_arguments_are_refused():
    with pytest.raises(ValueError, match="tile_overlap < tile_size"):
        Predictor.from_model(PixelwiseModel(), tile_size=32, tile_overlap=32)


# ---------------------------------------------------------------------- reading images
def _write_geotiff(path, data, crs="EPSG:32633", nodata=None):
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=data.shape[1],
        width=data.shape[2],
        count=data.shape[0],
        dtype=data.dtype.name,
        crs=crs,
        transform=from_origin(500000, 5000000, 0.5, 0.5),
        nodata=nodata,
    ) as dataset:
        dataset.write(data)


def test_geotiff_keeps_georeference_and_uses_three_of_four_bands(tmp_path):
    data = np.random.default_rng(0).integers(0, 256, (4, 30, 40), dtype=np.uint8)
    _write_geotiff(tmp_path / "scene.tif", data)
    image = read_image(tmp_path / "scene.tif")
    assert image.georeferenced and image.crs.to_epsg() == 32633
    assert image.transform == from_origin(500000, 5000000, 0.5, 0.5)
    np.testing.assert_array_equal(image.pixels, data[:3].transpose(1, 2, 0))


def test_uint16_bands_are_stretched_between_percentiles(tmp_path):
    band = np.arange(100 * 100, dtype=np.uint16).reshape(1, 100, 100)
    band[0, 0, 0] = 0  # the no-data value: left out of the percentiles
    _write_geotiff(tmp_path / "grey.tif", band, nodata=0)
    image = read_image(tmp_path / "grey.tif")
    valid = band[0][band[0] != 0]
    low, high = np.percentile(valid.astype(np.float32), (2, 98))
    pixels = image.pixels[..., 0]
    assert image.pixels.dtype == np.uint8 and image.pixels.shape == (100, 100, 3)
    assert (image.pixels == pixels[..., None]).all()  # one band replicated
    assert pixels[band[0] <= low].max() == 0 and pixels[band[0] >= high].min() == 255
    assert pixels[50, 50] == round((5050 - low) / (high - low) * 255)


def test_plain_png_has_no_georeference(tmp_path):
    from PIL import Image

    Image.fromarray(_image(12, 17)).save(tmp_path / "photo.png")
    image = read_image(tmp_path / "photo.png")
    assert image.pixels.shape == (12, 17, 3) and not image.georeferenced


@pytest.mark.parametrize("name", ["broken.png", "broken.tif"])
def test_corrupt_image_names_the_file(tmp_path, name):
    (tmp_path / name).write_bytes(b"not an image at all")
    with pytest.raises(ImageReadError, match=name):
        read_image(tmp_path / name)


# ---------------------------------------------------------------------- statistics, palette
def test_statistics_add_up_and_area_is_pixels_times_pixel_area():
    labels = np.array([[0, 0, 1], [1, 1, 1]], np.uint8)
    crs = rasterio.crs.CRS.from_epsg(32633)
    prediction = Prediction(
        class_names=CLASSES, labels=labels, crs=crs, transform=from_origin(0, 0, 0.5, 2.0)
    )
    rows = prediction.statistics()
    assert [r["pixels"] for r in rows] == [2, 4, 0]
    assert sum(r["percent"] for r in rows) == pytest.approx(100)
    assert prediction.pixel_area_m2 == 1.0
    assert [r["area_m2"] for r in rows] == [2.0, 4.0, 0.0]
    geographic = Prediction(
        class_names=CLASSES,
        labels=labels,
        crs=rasterio.crs.CRS.from_epsg(4326),
        transform=from_origin(0, 0, 1e-5, 1e-5),
    )
    assert geographic.pixel_area_m2 is None
    assert geographic.statistics()[0]["area_m2"] is None


def test_palette_is_fixed_and_distinct_for_many_classes():
    palette = label_palette(300)
    assert palette.shape == (300, 3) and palette.dtype == np.uint8
    assert len({tuple(colour) for colour in palette}) == 300
    np.testing.assert_array_equal(label_palette(5), palette[:5])
    assert tuple(palette[0]) == (0, 113, 188)  # Detectron2's colormap comes first
    assert (0, 0, 0) not in {tuple(colour) for colour in palette}  # black marks nodata


# ---------------------------------------------------------------------- streaming, nodata, bands
def _blend_whole_scene(model, pixels, class_names, tile_size, overlap, batch_size):
    """The blending of the first release (whole-scene sums, tiles in row-major order, batches
    of one tile row): the reference the streaming path must reproduce exactly."""
    H, W = pixels.shape[:2]
    h, w = min(tile_size, H), min(tile_size, W)
    total = np.zeros((len(class_names), H, W), np.float32)
    weight = np.zeros((H, W), np.float32)
    xs = tile_starts(W, tile_size, overlap)
    for y in tile_starts(H, tile_size, overlap):
        for first in range(0, len(xs), batch_size):
            columns = xs[first : first + batch_size]
            tiles = [pixels[y : y + h, x : x + w].transpose(2, 0, 1).copy() for x in columns]
            inputs = [{"image": torch.from_numpy(t), "height": h, "width": w} for t in tiles]
            with torch.no_grad():
                outputs = model(inputs, class_names)
            for x, output in zip(columns, outputs):
                ramp = np.outer(tile_weights(y, h, H, overlap), tile_weights(x, w, W, overlap))
                total[:, y : y + h, x : x + w] += output["sem_seg"].numpy() * ramp
                weight[y : y + h, x : x + w] += ramp
    return (total / weight).argmax(axis=0)


def test_streaming_a_geotiff_gives_the_labels_of_whole_scene_blending(toy_model, tmp_path):
    data = np.random.default_rng(4).integers(0, 256, (3, 150, 230), dtype=np.uint8)
    _write_geotiff(tmp_path / "scene.tif", data)
    predictor = Predictor.from_model(
        toy_model, tile_size=64, tile_overlap=16, batch_size=3, progress=False
    )
    with RasterScene.open(tmp_path / "scene.tif") as scene:
        blocks = list(predictor.predict_rows(scene.read_tile, 150, 230, CLASSES))
    streamed = np.concatenate([block.labels for block in blocks])
    assert len(blocks) > 1 and [b.top for b in blocks] == tile_starts(150, 64, 16)
    expected = _blend_whole_scene(toy_model, data.transpose(1, 2, 0), CLASSES, 64, 16, 3)
    np.testing.assert_array_equal(streamed, expected)


@pytest.mark.parametrize("tile_size, overlap", [(32, 8), (40, 30)])
def test_row_blocks_of_several_processes_join_to_the_whole(tile_size, overlap):
    pixels = _image(170, 60, seed=5)
    predictor = Predictor.from_model(
        PixelwiseModel(), tile_size=tile_size, tile_overlap=overlap, progress=False
    )
    reader = array_tile_reader(pixels)
    whole = list(predictor.predict_rows(reader, 170, 60, CLASSES, keep_scores=True))
    count = predictor.num_row_blocks(170)
    parts = [
        block
        for blocks in (range(0, 2), range(2, count - 1), range(count - 1, count))
        for block in predictor.predict_rows(
            reader, 170, 60, CLASSES, keep_scores=True, blocks=blocks
        )
    ]
    assert [b.top for b in parts] == [b.top for b in whole]
    for part, block in zip(parts, whole):
        np.testing.assert_array_equal(part.scores, block.scores)


def test_pixels_without_data_get_no_class_and_their_tiles_are_not_run():
    pixels = _image(64, 160, seed=6)
    valid = np.ones((64, 160), bool)
    valid[:, :70] = False  # the first two 32 px tile columns hold no data
    model = PixelwiseModel()
    predictor = Predictor.from_model(model, tile_size=32, tile_overlap=0, progress=False)
    prediction = predictor(RasterImage(pixels=pixels, valid=valid), CLASSES)
    assert sum(model.batch_sizes) == 2 * 3  # 2 tile rows x the 3 columns that touch data
    assert prediction.nodata == 255 and (prediction.labels[~valid] == 255).all()
    assert (prediction.labels[valid] < 3).all() and np.isnan(prediction.scores[:, ~valid]).all()
    expected = PixelwiseModel.expected(pixels, 3).numpy().argmax(0)
    np.testing.assert_array_equal(prediction.labels[valid], expected[valid])
    assert sum(row["pixels"] for row in prediction.statistics()) == valid.sum()
    assert sum(row["percent"] for row in prediction.statistics()) == pytest.approx(100)


def test_declared_nodata_marks_pixels_where_every_band_has_it(tmp_path):
    data = np.random.default_rng(7).integers(1, 256, (3, 20, 30), dtype=np.uint8)
    data[:, :5] = 0  # a border: no data in every band
    data[0, 10, 10] = 0  # one band at the nodata value: still a pixel with data
    _write_geotiff(tmp_path / "scene.tif", data, nodata=0)
    image = read_image(tmp_path / "scene.tif")
    assert not image.valid[:5].any() and image.valid[5:].all()


def test_alpha_band_and_png_transparency_are_masks(tmp_path):
    from PIL import Image

    rgba = np.random.default_rng(8).integers(0, 256, (12, 16, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    rgba[:4, :, 3] = 0
    Image.fromarray(rgba, "RGBA").save(tmp_path / "photo.png")
    image = read_image(tmp_path / "photo.png")
    np.testing.assert_array_equal(image.valid, rgba[..., 3] > 0)
    np.testing.assert_array_equal(image.pixels, rgba[..., :3])
    with rasterio.open(
        tmp_path / "rgba.tif", "w", driver="GTiff", height=12, width=16, count=4, dtype="uint8",
        photometric="RGB", alpha="YES",
    ) as dataset:  # fmt: skip
        dataset.write(rgba.transpose(2, 0, 1))
    scene = read_image(tmp_path / "rgba.tif")
    np.testing.assert_array_equal(scene.valid, rgba[..., 3] > 0)
    np.testing.assert_array_equal(scene.pixels, rgba[..., :3])


def test_bands_are_picked_and_ordered(tmp_path):
    data = np.random.default_rng(9).integers(0, 256, (4, 10, 12), dtype=np.uint8)
    _write_geotiff(tmp_path / "scene.tif", data)
    image = read_image(tmp_path / "scene.tif", bands=(4, 3, 2))
    np.testing.assert_array_equal(image.pixels, data[[3, 2, 1]].transpose(1, 2, 0))
    grey = read_image(tmp_path / "scene.tif", bands=(2,))
    np.testing.assert_array_equal(grey.pixels, data[[1, 1, 1]].transpose(1, 2, 0))
    with pytest.raises(ImageReadError, match="band 5 asked for.*has 4 band"):
        read_image(tmp_path / "scene.tif", bands=(5, 3, 2))
    with pytest.raises(ValueError, match="three 1-based band numbers"):
        parse_bands("4,3")


def test_large_scenes_are_stretched_alike_from_sample_windows(tmp_path, monkeypatch):
    monkeypatch.setattr(raster_io, "STRETCH_SAMPLE_PIXELS", 100)  # force the sampled path
    band = np.tile(np.arange(400, dtype=np.uint16), (300, 1))  # values rise left to right
    _write_geotiff(tmp_path / "grey.tif", band[None])
    with RasterScene.open(tmp_path / "grey.tif") as scene:
        (low, high), *_ = scene.stretch
        left, _ = scene.read_tile(0, 0, 50, 220)
        right, _ = scene.read_tile(100, 180, 50, 220)
    # Columns 180..219 are in both windows: the same raw values give the same pixels.
    np.testing.assert_array_equal(left[:, 180:], right[:, :40])
    assert 0 < low < 50 and 350 < high < 400  # about the 2nd / 98th percentiles of 0..399


def test_too_long_class_name_is_named_with_the_limit(predictor):
    name = "very " * 80 + "long"
    with pytest.raises(ValueError, match=r"Class name 'very .*long' is too long.*77-token"):
        predictor(_image(8, 8), ["road", name])


def test_class_names_in_any_script(predictor):
    names = ["建筑", "طريق", "Straße", "🌲 tree"]
    prediction = predictor(_image(20, 24), names)
    assert prediction.scores.shape == (4, 20, 24) and prediction.class_names == names
