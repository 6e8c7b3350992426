"""Your own images, read right or refused: bit depths and PIL modes, hidden files, classes dropped
for too few images, two folders of one class, Unicode and odd names, huge and corrupt files, and
'$' in figure labels. Every case writes real files of its kind."""

import ast
import io
import os
import struct
import unicodedata
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from result_tables import flat_tables

from class_embedding.data import folder_masks, image_folder
from class_embedding.errors import InputError
from class_embedding.figures import identifiability_figures, plotting
from class_embedding.models import preprocessing

FIGURES = Path(image_folder.__file__).resolve().parents[1] / "figures"
HALF = {"resize": [4, 4], "mean": [0.5] * 3, "std": [0.5] * 3}  # tensor = v / 127.5 - 1 for 8-bit v


def pixel(path) -> tuple:
    return preprocessing.load_image(path).getpixel((0, 0))


# ---------------------------------------------------------------------------------------------
# Pixel values: high bit depths and floats by their real range, every PIL mode right or refused


def test_16_bit_png_mid_grey_reaches_the_model_as_mid_grey(tmp_path):
    path = tmp_path / "grey16.png"
    Image.fromarray(np.full((4, 4), 32768, np.uint16)).save(path)
    assert Image.open(path).mode == "I;16"
    assert pixel(path) == (128, 128, 128)  # 32768 / 65535 * 255 = 127.5 -> 128, not clipped to 255
    tensor = preprocessing.Preprocessing(HALF)(preprocessing.load_image(path))
    np.testing.assert_allclose(tensor.numpy(), 128 / 127.5 - 1, atol=1e-6)  # 0.0039, not 1.0


@pytest.mark.parametrize(("value", "expected"), [(0, 0), (257 * 100, 100), (65535, 255)])
def test_16_bit_tiff_scales_by_65535(tmp_path, value, expected):
    path = tmp_path / "grey16.tif"
    Image.fromarray(np.full((3, 5), value, np.uint16)).save(path)
    assert pixel(path) == (expected,) * 3


@pytest.mark.parametrize(("value", "expected"), [(0.5, 128), (1.0, 255), (0.0, 0), (0.25, 64)])
def test_float_tiff_in_zero_one_scales_by_255(tmp_path, value, expected):
    path = tmp_path / "float.tif"
    Image.fromarray(np.full((4, 4), value, np.float32)).save(path)
    assert Image.open(path).mode == "F"
    assert pixel(path) == (expected,) * 3  # 0.5 was black before


@pytest.mark.parametrize("value", [1.5, -0.1, 255.0, np.nan, np.inf])
def test_float_tiff_outside_zero_one_or_not_finite_is_refused(tmp_path, value):
    path = tmp_path / "float.tif"
    values = np.full((4, 4), 0.5, np.float32)
    values[1, 2] = value
    Image.fromarray(values).save(path)
    with pytest.raises(InputError, match=r"float\.tif has floating-point pixels .*outside the range 0\.\.1"):
        preprocessing.load_image(path)


def test_32_bit_integer_tiff_is_refused(tmp_path):
    path = tmp_path / "int32.tif"
    Image.fromarray(np.full((4, 4), 100, np.int32)).save(path)
    assert Image.open(path).mode == "I"
    with pytest.raises(InputError, match=r"int32\.tif has 32-bit integer pixels.*save it as an 8-bit"):
        preprocessing.load_image(path)


def test_mode_i_of_a_16_bit_png_is_read_as_16_bit():
    """Older PIL read 16-bit PNGs as mode I: the file format says the range."""
    image = Image.fromarray(np.full((2, 2), 32768, np.int32))
    image.format = "PNG"
    assert preprocessing.to_rgb(image).getpixel((0, 0)) == (128, 128, 128)


def palette(mode):
    image = Image.new(mode, (3, 2), 1 if mode == "P" else (1, 200))
    image.putpalette([0, 0, 0, 10, 20, 30])
    return image


# mode -> (the image, the file it is written to or None where PIL writes no file of that mode,
# the RGB the model gets or None for a refusal)
MODES = {
    "1": (Image.new("1", (3, 2), 1), "png", (255, 255, 255)),
    "L": (Image.new("L", (3, 2), 77), "png", (77, 77, 77)),
    "LA": (Image.new("LA", (3, 2), (77, 9)), "png", (77, 77, 77)),
    "La": (Image.new("La", (3, 2), (77, 255)), None, (77, 77, 77)),
    "P": (palette("P"), "png", (10, 20, 30)),
    "PA": (palette("PA"), None, (10, 20, 30)),
    "RGB": (Image.new("RGB", (3, 2), (10, 20, 30)), "png", (10, 20, 30)),
    "RGBA": (Image.new("RGBA", (3, 2), (10, 20, 30, 40)), "png", (10, 20, 30)),
    "RGBa": (Image.new("RGBa", (3, 2), (10, 20, 30, 255)), None, (10, 20, 30)),
    "RGBX": (Image.new("RGBX", (3, 2), (10, 20, 30, 0)), None, (10, 20, 30)),
    "CMYK": (Image.new("CMYK", (3, 2), (0, 255, 255, 0)), "tif", (255, 0, 0)),
    "YCbCr": (Image.new("YCbCr", (3, 2), (128, 128, 128)), "tif", (128, 128, 128)),
    "HSV": (Image.new("HSV", (3, 2), (0, 255, 255)), None, (255, 0, 0)),
    "LAB": (Image.new("LAB", (3, 2), (50, 0, 0)), "tif", None),
    "I": (Image.new("I", (3, 2), 100), "tif", None),
    "I;16": (Image.new("I;16", (3, 2), 32768), "png", (128, 128, 128)),
    "I;16L": (Image.new("I;16L", (3, 2), 32768), None, (128, 128, 128)),
    "I;16B": (Image.new("I;16B", (3, 2), 32768), "tif", (128, 128, 128)),
    "I;16N": (Image.new("I;16N", (3, 2), 32768), None, (128, 128, 128)),
    "F": (Image.new("F", (3, 2), 0.5), "tif", (128, 128, 128)),
}


def test_every_pil_mode_is_listed():
    assert set(MODES) == set(Image.MODES)


@pytest.mark.parametrize("mode", sorted(MODES))
def test_every_pil_mode_is_read_right_or_refused_naming_the_file(tmp_path, mode):
    image, suffix, expected = MODES[mode]
    assert image.mode == mode
    if suffix is None:
        path = tmp_path / "in_memory.png"
        read = lambda: preprocessing.to_rgb(image, path)  # noqa: E731
    else:
        path = tmp_path / f"image.{suffix}"
        image.save(path)
        assert Image.open(path).mode == mode  # the file really has that mode
        read = lambda: preprocessing.load_image(path)  # noqa: E731
    if expected is None:
        with pytest.raises(InputError, match=f"{path.name} has .*save it as an 8-bit RGB or grayscale"):
            read()
    else:
        rgb = read()
        assert rgb.mode == "RGB" and set(map(tuple, np.asarray(rgb).reshape(-1, 3).tolist())) == {expected}


def test_an_unknown_mode_is_refused():
    image = SimpleNamespace(mode="BGR;24", format=None)
    with pytest.raises(InputError, match="odd.png has PIL mode BGR;24, which is not read"):
        preprocessing.to_rgb(image, "odd.png")


# ---------------------------------------------------------------------------------------------
# Huge and corrupt files


def one_bit_png(path: Path, width: int, height: int) -> None:
    """A real, all-black 1-bit PNG of any size, written without holding its pixels in memory."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\0" * (1 + (width + 7) // 8)
    pixels = zlib.compressobj(9)
    data = b"".join(pixels.compress(row) for _ in range(height)) + pixels.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b""))


@pytest.mark.parametrize(("width", "height", "megapixels"), [(18000, 10000, "180.0"), (10000, 10000, "100.0")])
def test_huge_image_is_refused_naming_its_size(tmp_path, width, height, megapixels):
    """Above twice PIL's limit it raises DecompressionBombError, above the limit it only warns:
    both stop with the file, its size and the fix; the global limit stays as it was."""
    limit = Image.MAX_IMAGE_PIXELS
    path = tmp_path / "huge.png"
    one_bit_png(path, width, height)
    with pytest.raises(InputError, match=rf"huge\.png is too large .*\({megapixels} megapixels.*downscale it"):
        preprocessing.load_image(path)
    assert Image.MAX_IMAGE_PIXELS == limit


def test_corrupt_image_advice_fits_an_image_folder(tmp_path):
    good = tmp_path / "good.png"
    Image.new("RGB", (64, 64), (1, 2, 3)).save(good)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:60])
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"not an image at all")
    for path in (truncated, garbage):
        with pytest.raises(InputError, match=f"{path.name} is corrupt") as err:
            preprocessing.load_image(path)
        assert "replace the file" in str(err.value) and "image folder you may instead delete it" in str(err.value)


# ---------------------------------------------------------------------------------------------
# The folder scan: hidden files, dropped classes, twins, Unicode and odd names


def images(folder: Path, n: int, prefix: str = "im") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", (8, 6), (i * 30, 0, 0)).save(folder / f"{prefix}{i}.jpg")


def test_apple_double_and_hidden_files_are_skipped_and_counted(tmp_path):
    images(tmp_path / "3", 2)
    images(tmp_path / "5", 2)
    # AppleDouble files: metadata, not JPEGs, and sorted before the real images.
    for folder in ("3", "5"):
        for i in range(2):
            (tmp_path / folder / f"._im{i}.jpg").write_bytes(b"\x00\x05\x16\x07" + b"\0" * 80)
    (tmp_path / "3" / ".DS_Store").write_bytes(b"\0" * 10)
    images(tmp_path / ".thumbnails", 3)  # a hidden folder: no class
    images(tmp_path / "__MACOSX" / "3", 1)  # macOS's zip folder: no class
    scan = image_folder.scan_image_folder(tmp_path, "index", 2, num_classes=10)
    assert [(k.folder, k.class_index, k.images) for k in scan.kept] == [
        ("3", 3, ("im0.jpg", "im1.jpg")),
        ("5", 5, ("im0.jpg", "im1.jpg")),
    ]
    assert scan.hidden_skipped == 6  # four '._' images and two hidden folders; .DS_Store is no image
    assert scan.dropped == {}
    assert any(m.startswith("6 hidden files or folders") and "'3/._im0.jpg'" in m for m in scan.messages)
    stimuli = image_folder.select_stimuli(tmp_path, "index", 2, 10)
    assert stimuli.column("file").to_pylist() == ["3/im0.jpg", "3/im1.jpg", "5/im0.jpg", "5/im1.jpg"]
    for file in stimuli.column("file").to_pylist():
        assert preprocessing.load_image(tmp_path / file).size == (8, 6)


def test_a_run_on_one_class_of_five_is_refused_naming_the_dropped_folders(tmp_path):
    images(tmp_path / "1", 4)
    for folder in ("2", "3", "4"):
        images(tmp_path / folder, 3)
    (tmp_path / "5").mkdir()  # empty
    with pytest.raises(InputError) as err:
        image_folder.select_stimuli(tmp_path, "index", 4, 10)
    message = str(err.value)
    assert "only 1 of the 5 class folders" in message
    assert "'2' (3), '3' (3), '4' (3), '5' (0)" in message
    assert "stimuli.images_per_class" in message and "stimuli.min_class_share = 0.5" in message
    with pytest.raises(InputError, match="only 1 of the 5"):
        image_folder.scan_image_folder(tmp_path, "index", 4, min_class_share=0.5)
    # A share of 0.2 allows it: the run goes on, and the scan says what it dropped.
    scan = image_folder.scan_image_folder(tmp_path, "index", 4, min_class_share=0.2)
    assert [k.folder for k in scan.kept] == ["1"] and scan.n_folders == 5
    assert scan.dropped == {"2": 3, "3": 3, "4": 3, "5": 0}
    assert scan.messages == (
        f"4 of 5 class folders of {tmp_path} dropped, fewer than stimuli.images_per_class = 4 images: "
        "'2' (3), '3' (3), '4' (3), '5' (0).",
    )
    stimuli = image_folder.select_stimuli(tmp_path, "index", 4, 10, min_class_share=0.2)
    assert stimuli.column("class_index").to_pylist() == [1] * 4


def test_the_share_boundary_and_a_long_list_of_dropped_folders(tmp_path):
    for folder in range(10):
        images(tmp_path / str(folder), 2 if folder < 3 else 1)
    scan = image_folder.scan_image_folder(tmp_path, "index", 2, min_class_share=0.3)  # 3 of 10 = 0.3: enough
    assert len(scan.kept) == 3
    with pytest.raises(InputError, match=r"'3' \(1\), '4' \(1\), '5' \(1\), '6' \(1\), '7' \(1\) and 2 more"):
        image_folder.scan_image_folder(tmp_path, "index", 2, min_class_share=0.31)


def test_two_folders_of_one_class_are_refused(tmp_path):
    names = ["tench, Tinca tinca", "goldfish", "great white shark, white shark, man-eater"]
    images(tmp_path / "a" / "great_white_shark", 2)
    images(tmp_path / "a" / "white_shark", 2)
    images(tmp_path / "a" / "tench", 2)
    with pytest.raises(InputError, match="'great_white_shark' and 'white_shark' .* both name class 2 \\(great white"):
        image_folder.scan_image_folder(tmp_path / "a", "class_name", 2, class_names=names)
    images(tmp_path / "b" / "0", 2)
    images(tmp_path / "b" / "00", 1)  # a dropped twin is a twin still
    with pytest.raises(InputError, match="'0' and '00' .* both name class 0 \\(labels: index\\)"):
        image_folder.select_stimuli(tmp_path / "b", "index", 2, 10)


def test_two_folders_of_one_imagenet_class_are_refused(tmp_path):
    images(tmp_path / "great_white_shark", 1)
    images(tmp_path / "white_shark", 1)
    with pytest.raises(InputError, match="'great_white_shark' and 'white_shark' .* both name class 2"):
        image_folder.select_stimuli(tmp_path, "class_name", 1, 1000)


def test_a_decomposed_folder_name_matches_its_composed_class_name(tmp_path):
    composed = "café"
    decomposed = unicodedata.normalize("NFD", composed)
    assert decomposed != composed
    images(tmp_path / decomposed, 2)
    images(tmp_path / "tea", 2)
    stimuli = image_folder.select_stimuli(tmp_path, "class_name", 2, 3, class_names=["tea", composed])
    assert stimuli.column("class_index").to_pylist() == [1, 1, 0, 0]
    assert stimuli.column("category").to_pylist()[0] == composed
    files = stimuli.column("file").to_pylist()
    assert files[0] == f"{decomposed}/im0.jpg"  # the folder's real name, so that the file is found
    assert pixel(tmp_path / files[0]) == (0, 0, 0)


@pytest.mark.parametrize("folder", ["²", "٣", "1.5", "-1"])
def test_a_folder_of_non_ascii_digits_is_no_class_index(tmp_path, folder):
    images(tmp_path / folder, 1)
    with pytest.raises(InputError, match=f"class folder '{folder}' is not a class index"):
        image_folder.select_stimuli(tmp_path, "index", 1, 10)


def test_non_utf8_names_are_refused_naming_them(tmp_path):
    images(tmp_path / "a" / "3", 2)
    jpeg = (tmp_path / "a" / "3" / "im0.jpg").read_bytes()
    fd = os.open(os.fsencode(tmp_path / "a" / "3") + b"/caf\xe9.jpg", os.O_CREAT | os.O_WRONLY)
    os.write(fd, jpeg)
    os.close(fd)
    with pytest.raises(InputError, match=r"image in class folder '3': b'caf\\xe9.jpg' .*not UTF-8: rename it"):
        image_folder.select_stimuli(tmp_path / "a", "index", 2, 10)
    os.makedirs(os.fsencode(tmp_path / "b") + b"/th\xe9")
    images(tmp_path / "b" / "3", 2)
    with pytest.raises(InputError, match=r"class folder in .*: b'th\\xe9' has a name that is not UTF-8"):
        image_folder.scan_image_folder(tmp_path / "b", "class_name", 2, class_names=["x"])


def test_loose_images_and_other_suffixes_are_said(tmp_path):
    images(tmp_path / "3", 2)
    images(tmp_path, 1, prefix="loose")
    (tmp_path / "3" / "photo.heic").write_bytes(b"\0")
    (tmp_path / "3" / "PHOTO2.HEIC").write_bytes(b"\0")
    scan = image_folder.scan_image_folder(tmp_path, "index", 2)
    assert scan.messages == (
        f"1 image directly in {tmp_path} skipped: images belong in <root>/<label>/.",
        f"2 files in the class folders of {tmp_path} not read as images (by their suffix: .heic (2)); images "
        f"are {', '.join(image_folder.IMAGE_SUFFIXES)}: convert others (e.g. .heic) to one of these.",
    )


def test_the_scan_opens_no_image(tmp_path, monkeypatch):
    images(tmp_path / "3", 2)
    (tmp_path / "3" / "broken.jpg").write_bytes(b"not decoded by the scan")
    monkeypatch.setattr(Image, "open", lambda *a, **k: pytest.fail("the scan opened an image"))
    scan = image_folder.scan_image_folder(tmp_path, "index", 3)
    assert scan.kept[0].images == ("broken.jpg", "im0.jpg", "im1.jpg")


# ---------------------------------------------------------------------------------------------
# Masks read by value


@pytest.mark.parametrize(
    ("mode", "value", "background"),
    [("I;16", 300, 0), ("RGB", (0, 0, 1), (0, 0, 0)), ("RGBA", (1, 0, 0, 0), (0, 0, 0, 255)), ("L", 1, 0)],
)
def test_masks_are_non_zero_by_value(tmp_path, mode, value, background):
    mask = Image.new(mode, (4, 4), background)
    mask.paste(value, (2, 0, 4, 2))  # the top-right quarter is the class
    mask.save(tmp_path / "m.png")
    expected = np.zeros((4, 4), bool)
    expected[:2, 2:] = True
    np.testing.assert_array_equal(folder_masks.read_mask(tmp_path / "m.png"), expected)


# ---------------------------------------------------------------------------------------------
# '$' in names drawn on figures


def test_plot_text_escapes_dollars():
    assert plotting.plot_text("ViT $B_$") == r"ViT \$B_\$"
    assert plotting.plot_text(3) == "3"


def test_a_figure_with_dollars_in_model_names_renders(tmp_path):
    """Two real figure targets, drawn with Agg from extraction tables, with a display name that
    mathtext cannot parse: the title and legend read it literally, the CSV keeps it."""
    from test_identifiability import CLS_LOGITS, CLS_RANKS, GAP_LOGITS, GAP_RANKS, write_extract

    models = []
    for name, ranks, logits, class_token, group in [
        ("cls_model", CLS_RANKS, CLS_LOGITS, True, 1),
        ("gap_model", GAP_RANKS, GAP_LOGITS, False, 2),
    ]:
        (tmp_path / name).mkdir()
        write_extract(tmp_path / name, ranks, logits, [True, False, True])
        models.append(
            {
                "name": name,
                "display_name": f"ViT $B_$ {name}",
                "class_token": class_token,
                "block_group": group,
                "num_blocks": 2,
                "num_classes": 4,
                "token_grid": 2,
                **flat_tables(tmp_path / name),
                "random_twin": None,
            }
        )
    for function in (
        identifiability_figures.fig_change_rate,
        identifiability_figures.fig_identifiability_mean_evolution,
    ):
        stem = tmp_path / function.__name__
        output = SimpleNamespace(
            pdf=stem.with_suffix(".pdf"), png=stem.with_suffix(".png"), data=stem.with_suffix(".csv")
        )
        function(models=models, output=output, seed=0)
        assert output.png.stat().st_size > 0 and output.pdf.stat().st_size > 0
        assert set(pd.read_csv(output.data)["display_name"]) == {"ViT $B_$ cls_model", "ViT $B_$ gap_model"}


def test_unescaped_dollars_would_stop_the_figure():
    fig, axes = plotting.new_figure(1, 1, (2, 2))
    axes[0, 0].set_title("ViT $B_$")
    with pytest.raises(ValueError, match="B_"):
        fig.savefig(io.BytesIO(), format="png")
    axes[0, 0].set_title(plotting.plot_text("ViT $B_$"))
    fig.savefig(io.BytesIO(), format="png")


DRAWN_NAMES = ("display_name", "names[", "class_name", ".title", "sample.name", "category")


def text_arguments(call: ast.Call) -> list[ast.expr]:
    name = getattr(call.func, "attr", getattr(call.func, "id", ""))
    args = []
    if name in ("set_title", "suptitle", "set_xlabel", "set_ylabel"):
        args += call.args[:1]
    if name == "text":
        args += call.args[2:3]
    return args + [k.value for k in call.keywords if k.arg in ("label", "title", "s", "t")]


def test_every_name_drawn_on_a_figure_goes_through_plot_text():
    """A model or class name reaches matplotlib only through plotting.plot_text."""
    unescaped = []
    for path in sorted(FIGURES.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            for arg in text_arguments(node):
                is_escaped = isinstance(arg, ast.Call) and getattr(arg.func, "id", "") == "plot_text"
                source = ast.unparse(arg)
                if not is_escaped and any(name in source for name in DRAWN_NAMES):
                    unescaped.append(f"{path.name}:{node.lineno}: {source}")
    assert not unescaped
