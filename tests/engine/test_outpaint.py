import numpy as np
import pytest
from PIL import Image, ImageFilter

from sdstudio.engine.errors import RequestError
from sdstudio.engine.geometry import prepare_mask
from sdstudio.engine.outpaint import FILLS, Extension, blend_band, extend, only_masked_size, seam_band
from sdstudio.engine.pipeline import generate
from sdstudio.engine.request import GenerationRequest


def textured(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


def px(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


@pytest.mark.parametrize("text, expected", [
    ("left=128,right=128", Extension(left=128, right=128)),
    (" Up=8 , down=16 ", Extension(up=8, down=16)),
    ("top=8,bottom=4", Extension(up=8, down=4)),
    ("all=64", Extension(64, 64, 64, 64)),
    ("all=8,left=0", Extension(0, 8, 8, 8)),
])
def test_parse_reads_sides_and_pixels(text, expected):
    assert Extension.parse(text) == expected
    assert Extension.parse(expected.text()) == expected


@pytest.mark.parametrize("text", ["", "left", "left=", "left=-8", "left=1.5", "middle=8", "left=0", "left=99999",
                                  "left=8;right=8", "left=\u0661\u0662"])
def test_parse_refuses_with_a_message(text):
    with pytest.raises(RequestError, match="outpaint"):
        Extension.parse(text)


def test_extension_values_are_checked():
    with pytest.raises(RequestError):
        Extension(left=True)
    with pytest.raises(RequestError):
        Extension(up=-1)


@pytest.mark.parametrize("ext, size, multiple, expected", [
    (Extension(right=100), (64, 60), 8, Extension(right=104, down=4)),  # no vertical side: the extra goes down
    (Extension(left=13), (64, 64), 8, Extension(left=16)),
    (Extension(left=13, right=1), (64, 64), 8, Extension(left=13, right=3)),
    (Extension(up=5), (61, 64), 8, Extension(up=8, right=3)),
    (Extension(right=64, down=64), (64, 64), 8, Extension(right=64, down=64)),
    (Extension(right=3), (64, 64), 1, Extension(right=3)),
])
def test_rounded_grows_the_canvas_to_the_multiple_on_an_extended_side(ext, size, multiple, expected):
    out = ext.rounded(size, multiple)
    assert out == expected
    w, h = out.size(size)
    assert w % multiple == 0 and h % multiple == 0


@pytest.mark.parametrize("fill", FILLS)
def test_extend_keeps_the_original_exactly_and_masks_only_the_new_area(fill):
    image = textured(40, 30)
    ext = Extension(left=7, right=20, up=3, down=50)
    canvas, mask = extend(image, ext, fill, seed=3)
    assert canvas.size == mask.size == (67, 83) and canvas.mode == "RGB" and mask.mode == "L"
    c, m = px(canvas), np.asarray(mask)
    assert np.array_equal(c[3:33, 7:47], px(image))
    inside = np.zeros(m.shape, bool)
    inside[3:33, 7:47] = True
    assert (m[inside] == 0).all() and (m[~inside] == 255).all()


def test_edge_fill_repeats_the_nearest_edge_pixel():
    image = textured(10, 10)
    canvas, _ = extend(image, Extension(left=5, up=4), "edge")
    c, i = px(canvas), px(image)
    assert np.array_equal(c[4:, 0], i[:, 0])  # left: the first column repeated
    assert np.array_equal(c[0, 5:], i[0])  # up: the first row repeated
    assert (c[:4, :5] == i[0, 0]).all()  # the corner: the corner pixel


def test_blur_fill_is_smooth_and_takes_the_colours_next_to_the_seam():
    image = Image.new("RGB", (64, 64), (200, 30, 30))
    image.paste((30, 30, 200), (0, 0, 32, 64))  # left half blue, right half red
    canvas, _ = extend(image, Extension(right=64), "blur")
    new = px(canvas)[:, 64:]
    assert abs(new[:, 8:].mean(axis=(0, 1)) - np.array([200, 30, 30])).max() < 25  # red side mirrored out
    detailed = textured(64, 64)
    c, _ = extend(detailed, Extension(right=64), "blur")
    assert np.abs(np.diff(px(c)[:, 80:], axis=1)).mean() < np.abs(np.diff(px(detailed), axis=1)).mean() / 4


def test_noise_fill_is_seeded_and_centred_on_the_border_colour():
    image = Image.new("RGB", (32, 32), (100, 150, 50))
    a, _ = extend(image, Extension(down=64), "noise", seed=1)
    b, _ = extend(image, Extension(down=64), "noise", seed=1)
    c, _ = extend(image, Extension(down=64), "noise", seed=2)
    assert a.tobytes() == b.tobytes() and a.tobytes() != c.tobytes()
    new = px(a)[32:]
    assert np.abs(new.mean(axis=(0, 1)) - np.array([100, 150, 50])).max() < 6 and new.std() > 20


def test_a_painted_mask_is_kept_inside_the_image():
    image = textured(32, 32)
    mask = Image.new("L", (32, 32), 0)
    mask.paste(255, (4, 4, 12, 12))
    _, out = extend(image, Extension(left=8), mask=mask)
    m = np.asarray(out)
    assert (m[:, :8] == 255).all() and (m[4:12, 12:20] == 255).all() and m[20:, 20:].max() == 0


def test_a_canvas_past_the_size_limit_is_refused_before_it_is_made():
    with pytest.raises(RequestError, match="4104x8.*limit is 4096"):
        extend(textured(8, 8), Extension(left=4096))


def test_bad_fill_and_mismatched_mask_are_refused():
    with pytest.raises(RequestError, match="fill"):
        extend(textured(8, 8), Extension(left=8), "lama")
    with pytest.raises(RequestError, match="must match"):
        extend(textured(8, 8), Extension(left=8), mask=Image.new("L", (4, 4)))


@pytest.mark.parametrize("blur", [0, 1, 2, 3, 4, 7, 16, 33, 64, 128, 256])
def test_blend_band_bounds_how_far_the_blurred_mask_reaches(blur):
    a = np.zeros((4, 1800), np.uint8)
    a[:, :900] = 255
    m = Image.fromarray(a)
    if blur:
        m = m.filter(ImageFilter.GaussianBlur(blur))
    reach = int(np.nonzero(np.asarray(m)[2])[0].max()) - 899
    assert reach <= blend_band(blur)
    assert blend_band(blur) <= reach + blur + 2  # and not much wider than it needs to be


BASE = GenerationRequest(prompt="a red apple", negative_prompt="blurry", steps=4, cfg_scale=5.0, sampler="Euler",
                         seed=7, strength=1.0)


def outpaint_request(image, ext, fill="edge", blur=4):
    canvas, mask = extend(image, ext, fill, seed=BASE.seed, mask_blur=blur)
    return BASE.replace(init_image=canvas, mask=mask, mask_blur=blur, width=canvas.width, height=canvas.height)


def assert_original_kept(out: Image.Image, image: Image.Image, ext: Extension, blur: int) -> None:
    band = seam_band(blur)
    o, i = px(out), px(image)
    inner = o[ext.up : ext.up + image.height, ext.left : ext.left + image.width]
    # every original pixel beyond the blend band of each extended side is the original's, bit for bit
    top = band if ext.up else 0
    left = band if ext.left else 0
    bottom = image.height - (band if ext.down else 0)
    right = image.width - (band if ext.right else 0)
    assert np.array_equal(inner[top:bottom, left:right], i[top:bottom, left:right])


@pytest.mark.parametrize("fill", FILLS)
def test_outpainting_keeps_the_original_outside_the_blend_band_and_paints_the_new_area(tiny_model, fill):
    image = textured(48, 40, seed=5)
    ext = Extension(left=16, right=8, down=24)
    out = generate(tiny_model, outpaint_request(image, ext, fill)).images[0]
    assert out.size == (72, 64)
    assert_original_kept(out, image, ext, 4)
    canvas, _ = extend(image, ext, fill, seed=BASE.seed, mask_blur=4)
    new = px(out)[40:, :]  # the new strip at the bottom
    assert np.abs(new - px(canvas)[40:, :]).mean() > 3  # repainted, not the fill left as it was


def test_the_band_is_where_the_seam_blends(tiny_model):
    image = textured(48, 48, seed=2)
    ext = Extension(right=16)
    out = px(generate(tiny_model, outpaint_request(image, ext, blur=3)).images[0])
    band = seam_band(3)
    seam = out[:, 48 - band : 48] - px(image)[:, 48 - band :]
    assert np.abs(seam).max() > 0  # the generated pixels fade into the original: a blend, not a cut
    assert np.abs(seam[:, 0]).max() == 0 or np.abs(seam[:, -1]).mean() > np.abs(seam[:, 0]).mean()
    assert np.array_equal(out[:, : 48 - band], px(image)[:, : 48 - band])


def test_without_mask_blur_the_original_is_kept_to_the_seam(tiny_model):
    image = textured(40, 48, seed=4)
    ext = Extension(left=24)
    out = px(generate(tiny_model, outpaint_request(image, ext, blur=0)).images[0])
    assert np.array_equal(out[:, 24:], px(image))


def test_nine_channel_inpainting_model_outpaints(tmp_path):
    from sdstudio.engine.checkpoint import load_checkpoint
    from tests.tiny_checkpoint import write_tiny_checkpoint

    model = load_checkpoint(write_tiny_checkpoint(tmp_path / "inpaint.safetensors", in_channels=9))
    assert model.description.inpainting
    image = textured(40, 40, seed=9)
    ext = Extension(up=8, right=16)
    req = outpaint_request(image, ext, "noise", blur=2)
    out = generate(model, req).images[0]
    assert out.size == (56, 48)
    assert_original_kept(out, image, ext, 2)
    assert generate(model, req).images[0].tobytes() == out.tobytes()  # and it re-runs to the same pixels


@pytest.mark.parametrize("blur", [0, 1, 4, 5])
def test_the_blurred_mask_covers_the_new_area_and_stops_at_the_seam_band(blur):
    image = textured(64, 48)
    ext = Extension(left=24, up=16)
    canvas, mask = extend(image, ext, "noise", mask_blur=blur)
    blurred = np.asarray(prepare_mask(mask, canvas.size, blur))
    new = np.asarray(mask) == 255
    new[16:, 24:] = False  # the new area only, not the overlap
    new[:16], new[:, :24] = True, True
    assert (blurred[new] == 255).all()  # no fill shows through at the new area's inner edge
    band = seam_band(blur)
    assert blurred[16 + band :, 24 + band :].max() == 0
    overlap = blend_band(blur)
    assert (np.asarray(mask)[16:, 24 : 24 + overlap] == 255).all() and np.asarray(mask)[16 + overlap :, 24 + overlap :].max() == 0


def test_the_overlap_stays_inside_a_small_image():
    _, mask = extend(textured(8, 8), Extension(right=8), mask_blur=16)
    assert (np.asarray(mask) == 255).all()


def test_only_masked_size_is_the_masks_box_with_padding_at_the_latent_multiple():
    _, mask = extend(textured(48, 40), Extension(right=16), mask_blur=4)  # white from x = 48 - 13
    assert only_masked_size(mask, 8, 8) == (40, 40)  # x 27..64 (37 px) -> 40; the whole height
    _, mask = extend(textured(48, 40), Extension(up=8), mask_blur=0)
    assert only_masked_size(mask, 0, 8) == (48, 8) and only_masked_size(mask, 4, 8) == (48, 16)
    with pytest.raises(RequestError, match="empty"):
        only_masked_size(Image.new("L", (8, 8)), 4, 8)


@pytest.mark.parametrize("channels, ext", [(4, Extension(right=16)),
                                           (4, Extension(left=16, right=8, down=24)),
                                           (9, Extension(up=8, right=16))])
def test_only_masked_outpainting_keeps_the_original_outside_the_blend_band(tiny_model, tmp_path, channels,
                                                                          ext):
    from sdstudio.engine.checkpoint import load_checkpoint
    from tests.tiny_checkpoint import write_tiny_checkpoint

    model = tiny_model if channels == 4 else load_checkpoint(
        write_tiny_checkpoint(tmp_path / "inpaint.safetensors", in_channels=9))
    image = textured(48, 40, seed=5)
    whole = outpaint_request(image, ext)
    width, height = only_masked_size(whole.mask, 8, 8)
    req = whole.replace(only_masked=True, only_masked_padding=8, width=width, height=height)
    out = generate(model, req).images[0]
    assert out.size == whole.init_image.size  # the whole canvas comes back, the box pasted in
    assert_original_kept(out, image, ext, 4)
    o, canvas = px(out), px(whole.init_image)
    new = px(whole.mask) == 255
    assert np.abs(o[new] - canvas[new]).mean() > 3  # the new area is painted, not the fill left as it was
    if (width, height) != whole.init_image.size:  # a box, not the canvas: another job than the whole one
        assert not np.array_equal(o, px(generate(model, whole).images[0]))
