import io

import numpy as np
import pytest
from astropy.io import fits
from PIL import Image

from lsbg_classify import status
from lsbg_classify.colour import DES_MAPPING, HSC_MAPPING, asinh_rgb
from lsbg_classify.pipeline.preprocess import (
    BadImageError,
    as_uint8,
    jpeg_to_rgb,
    prepare_payload,
    to_model_input,
)
from lsbg_classify.surveys import Payload


def _jpeg(array, quality=95):
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", quality=quality, subsampling=0)
    return buf.getvalue()


def _fits_cube(cube):
    buf = io.BytesIO()
    fits.PrimaryHDU(cube.astype(np.float32)).writeto(buf)
    return buf.getvalue()


def _gaussian_cube(size=256, sigma=20.0, amplitude=1.0):
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    blob = amplitude * np.exp(-(xx**2 + yy**2) / (2 * sigma**2))
    rng = np.random.default_rng(1)
    return np.stack([blob * f + rng.normal(0, 0.005, blob.shape) for f in (0.5, 1.0, 1.5)])


def test_asinh_rgb_matches_the_viewer_formula_on_one_pixel():
    g, r, z = 0.2, 0.5, 0.9
    cube = np.array([z, r, g], float).reshape(3, 1, 1)
    x = np.maximum(0, np.array([z * 2.2, r * 3.4, g * 6.0]) + 0.03)
    intensity = x.mean()
    expected = np.clip(x * np.arcsinh(20 * intensity) / np.sqrt(20) / intensity, 0, 1)
    assert np.allclose(asinh_rgb(cube, DES_MAPPING)[0, 0], expected, atol=1e-6)


def test_asinh_rgb_hsc_divides_by_zero_point_factor():
    cube = np.full((3, 2, 2), 63.1)
    one_nmgy = np.ones((3, 2, 2))
    mapping_no_divisor = type(HSC_MAPPING)(HSC_MAPPING.channel_bands, HSC_MAPPING.scales)
    assert np.allclose(asinh_rgb(cube, HSC_MAPPING), asinh_rgb(one_nmgy, mapping_no_divisor))


def test_asinh_rgb_black_where_all_bands_are_negative():
    cube = np.full((3, 4, 4), -10.0)
    assert np.all(asinh_rgb(cube, DES_MAPPING) == 0)


def test_jpeg_decodes_to_unit_range():
    array = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    rgb = jpeg_to_rgb(_jpeg(array))
    assert rgb.shape == (256, 256, 3) and rgb.dtype == np.float32
    assert 0 <= rgb.min() and rgb.max() <= 1


def test_garbage_and_html_are_bad_images():
    for data in (b"<html><body>Internal error</body></html>", b"no such layer", b""):
        with pytest.raises(BadImageError):
            jpeg_to_rgb(data)


def test_resize_to_64_keeps_mean_brightness():
    rgb = np.random.default_rng(2).uniform(0, 1, (256, 256, 3)).astype(np.float32)
    small = to_model_input(rgb)
    assert small.shape == (64, 64, 3)
    assert abs(small.mean() - rgb.mean()) < 0.01
    # Anti-aliasing averages pixel noise down instead of picking single pixels.
    assert small.std() < 0.5 * rgb.std()


def test_jpeg_and_fits_of_the_same_scene_give_the_same_model_input():
    cube = _gaussian_cube()
    # The JPEG is north-up; the FITS cube's first row is its south edge.
    rgb = asinh_rgb(cube[::-1, ::-1], DES_MAPPING)
    jpeg = _jpeg(np.round(rgb * 255).astype(np.uint8), quality=100)
    from_jpeg, st1, _ = prepare_payload(Payload(jpeg, "jpeg"), DES_MAPPING)
    from_fits, st2, _ = prepare_payload(Payload(_fits_cube(cube), "fits"), DES_MAPPING)
    assert st1 == st2 == status.OK
    assert np.abs(from_jpeg - from_fits).max() < 0.02


def test_blank_jpeg_is_no_coverage_and_broken_is_bad_image():
    blank = _jpeg(np.full((256, 256, 3), 0, np.uint8))
    image, st, message = prepare_payload(Payload(blank, "jpeg"), DES_MAPPING)
    assert image is None and st == status.NO_COVERAGE and "blank" in message
    image, st, _ = prepare_payload(Payload(blank[: len(blank) // 3], "jpeg"), DES_MAPPING)
    assert image is None and st == status.BAD_IMAGE


def test_fits_with_wrong_shape_or_no_data():
    image, st, _ = prepare_payload(Payload(_fits_cube(np.ones((2, 64, 64))), "fits"), DES_MAPPING)
    assert st == status.BAD_IMAGE
    image, st, _ = prepare_payload(Payload(_fits_cube(np.zeros((3, 64, 64))), "fits"), DES_MAPPING)
    assert st == status.NO_COVERAGE
    nan = np.full((3, 64, 64), np.nan)
    image, st, _ = prepare_payload(Payload(_fits_cube(nan), "fits"), DES_MAPPING)
    assert st == status.NO_COVERAGE


def test_tiny_image_is_bad():
    tiny = _jpeg(np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8))
    _, st, message = prepare_payload(Payload(tiny, "jpeg"), DES_MAPPING)
    assert st == status.BAD_IMAGE and "too small" in message


def test_as_uint8_round_trip():
    x = np.linspace(0, 1, 256, dtype=np.float32)
    assert np.array_equal(as_uint8(x), np.arange(256, dtype=np.uint8))


def test_fits_rows_are_flipped_to_image_orientation():
    # A source in the north (last FITS rows) must appear at the top of the image.
    cube = np.zeros((3, 64, 64))
    cube[:, 60:, 30:34] = 1.0
    cube += np.random.default_rng(0).normal(0, 0.01, cube.shape)
    image, st, _ = prepare_payload(Payload(_fits_cube(cube), "fits"), DES_MAPPING)
    assert st == status.OK
    brightness = image.mean(axis=(1, 2))
    assert brightness[:4].mean() > brightness[-4:].mean() + 0.03


def test_resize_is_the_papers_pil_resize_of_the_jpeg():
    # The paper: Image.open(jpeg).resize((64, 64)) (PIL's default filter for
    # RGB, bicubic with anti-aliasing), divided by 255.
    array = np.random.default_rng(3).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    data = _jpeg(array)
    with Image.open(io.BytesIO(data)) as img:
        expected = np.asarray(img.resize((64, 64)), dtype=np.float32) / 255.0
    image, row_status, _ = prepare_payload(Payload(data, "jpeg"), DES_MAPPING)
    assert row_status == status.OK
    assert np.array_equal(image, expected)


def test_fits_goes_through_the_same_8_bit_resize_as_a_jpeg():
    cube = _gaussian_cube()
    rgb8 = as_uint8(asinh_rgb(cube[::-1, ::-1, :], DES_MAPPING))
    expected = np.asarray(Image.fromarray(rgb8).resize((64, 64)), dtype=np.float32) / 255.0
    image, row_status, _ = prepare_payload(Payload(_fits_cube(cube), "fits"), DES_MAPPING)
    assert row_status == status.OK
    assert np.array_equal(image, expected)


def test_a_jpeg_declaring_too_many_pixels_is_a_bad_image_before_decoding():
    from lsbg_classify.pipeline.preprocess import MAX_CUTOUT_PIXELS

    side = int(np.sqrt(MAX_CUTOUT_PIXELS)) + 1
    buf = io.BytesIO()
    Image.new("RGB", (side, side), (10, 20, 30)).save(buf, format="JPEG", quality=10)
    image, row_status, message = prepare_payload(Payload(buf.getvalue(), "jpeg"), DES_MAPPING)
    assert image is None and row_status == status.BAD_IMAGE
    assert "pixels" in message
