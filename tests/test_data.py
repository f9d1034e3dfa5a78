"""reprlab.data: every format, the cache, the download, splits, transforms and bad input."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
from fixtures_data import (
    CLASSES3,
    cifar_batch,
    cifar_meta,
    image_folder_files,
    make_cifar_folder,
    make_cifar_targz,
    make_npz,
    py2_cifar_batch,
    random_images,
    write_dir,
    write_tar,
)
from PIL import Image

from reprlab import data
from reprlab.data import (
    CIFAR10_CLASSES,
    ImageSet,
    Standardizer,
    check_compatible,
    flatten,
    gamma_encode,
    grayscale,
    limit_images,
    load_images,
    random_translate,
    run_images,
    select_classes,
    stratified_split,
    stratified_subset,
    to_float,
)
from reprlab.errors import ReprlabError


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test gets its own cache folder and no REPRLAB_DATA."""
    monkeypatch.setenv("REPRLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("REPRLAB_DATA", raising=False)


def raises_naming(path: Path | str, *words: str):
    """pytest.raises(ReprlabError) whose one-line message names ``path`` and ``words``."""

    class _Ctx:
        def __enter__(self):
            self._ctx = pytest.raises(ReprlabError)
            self.info = self._ctx.__enter__()
            return self.info

        def __exit__(self, *exc):
            handled = self._ctx.__exit__(*exc)
            msg = str(self.info.value)
            assert str(Path(path).name) in msg, msg
            assert "\n" not in msg, msg
            for w in words:
                assert w in msg, msg
            return handled

    return _Ctx()


# ---------------------------------------------------------------------------------------------
# Formats
# ---------------------------------------------------------------------------------------------


def test_npz_labelled_and_unlabelled(tmp_path: Path) -> None:
    ds = load_images(make_npz(tmp_path / "a.npz", n=12, k=3))
    assert ds.images.shape == (12, 8, 8, 3) and ds.images.dtype == np.uint8
    assert ds.labels.dtype == np.int64 and list(ds.labels[:4]) == [0, 1, 2, 0]
    assert ds.classes == ["0", "1", "2"]  # no names, labels 0..2: three classes, no phantoms
    assert ds.source == str(tmp_path / "a.npz") and len(ds) == 12
    np.testing.assert_array_equal(ds.images, random_images(12))

    un = load_images(make_npz(tmp_path / "b.npz", labels=False))
    assert un.labels is None and un.classes == []
    with raises_naming(tmp_path / "b.npz", "no labels"):
        load_images(tmp_path / "b.npz", require_labels=True)

    named = load_images(make_npz(tmp_path / "c.npz", k=3, classes=np.array(CLASSES3)))
    assert named.classes == CLASSES3
    many = load_images(make_npz(tmp_path / "d.npz", n=12, k=12))
    assert many.classes == [str(i) for i in range(12)]
    ten = load_images(make_npz(tmp_path / "e.npz", n=12, k=10))
    assert ten.classes == CIFAR10_CLASSES  # labels 0..9 without names: CIFAR-10's


def test_npz_grayscale_gets_channel_axis(tmp_path: Path) -> None:
    np.savez(tmp_path / "g.npz", images=random_images(5, c=1)[..., 0])
    ds = load_images(tmp_path / "g.npz")
    assert ds.images.shape == (5, 8, 8, 1)


def test_cifar_python_folder_and_targz(tmp_path: Path) -> None:
    root = make_cifar_folder(tmp_path / "f", n_train=4, n_test=3)
    expected = np.concatenate([cifar_batch(4, seed=i)[1] for i in range(1, 6)])
    for src in (root, root.parent, make_cifar_targz(tmp_path / "cifar-10-python.tar.gz")):
        tr = load_images(src)
        assert tr.images.shape == (20, 32, 32, 3)
        np.testing.assert_array_equal(tr.images, expected)  # CHW rows -> NHWC
        assert list(tr.labels[:5]) == [0, 1, 2, 3, 0]
        assert tr.classes == CIFAR10_CLASSES
        te = load_images(src, split="test")
        np.testing.assert_array_equal(te.images, cifar_batch(3, seed=99)[1])


def test_cifar_python2_pickle_as_in_the_official_release(tmp_path: Path, capsys) -> None:
    imgs = random_images(3, 32, 32, seed=5)
    batch = py2_cifar_batch(imgs.transpose(0, 3, 1, 2).reshape(3, 3072), [1, 2, 9])
    ds = load_images(write_dir(tmp_path / "cifar-10-batches-py", {"data_batch_1": batch}))
    np.testing.assert_array_equal(ds.images, imgs)
    assert ds.labels.tolist() == [1, 2, 9] and ds.classes == CIFAR10_CLASSES
    # one batch of five: used, with a note (a partial copy of the release is easy to miss)
    assert "only data_batch_1 of the 5 train batches found" in capsys.readouterr().err


def test_cifar_protocol5_pickles_and_meta_names(tmp_path: Path) -> None:
    names = [f"c{i}" for i in range(10)]
    write_dir(
        tmp_path,
        {"test_batch": cifar_batch(6, 1, protocol=5)[0], "batches.meta": cifar_meta(names)},
    )
    ds = load_images(tmp_path, split="test")
    assert len(ds) == 6 and ds.classes == names


def test_image_folder_dir_and_tar(tmp_path: Path) -> None:
    files, imgs, labs = image_folder_files(per_class=3)
    ds = load_images(write_dir(tmp_path / "dir", files))
    assert ds.classes == sorted(CLASSES3)
    np.testing.assert_array_equal(ds.images, imgs)
    np.testing.assert_array_equal(ds.labels, labs)

    split_files = {"README": b"not an image", "notes.txt": b"x"}
    split_files |= {f"train/{k}": v for k, v in files.items()}
    test_files, test_imgs, _ = image_folder_files(per_class=1, classes=["cat", "dog"], size=8)
    split_files |= {f"test/{k}": v for k, v in test_files.items()}
    tar = write_tar(tmp_path / "set.tar.xz", split_files)
    tr = load_images(tar)
    np.testing.assert_array_equal(tr.images, imgs)
    np.testing.assert_array_equal(tr.labels, labs)
    te = load_images(tar, split="test")
    assert te.classes == ["cat", "dog"] and len(te) == 2
    with raises_naming(tar, "'val'"):
        load_images(tar, split="val")
    # cached: the second load returns the same arrays from .npy files
    again = load_images(tar)
    np.testing.assert_array_equal(again.images, imgs)
    assert again.classes == tr.classes and again.source == str(tar)
    assert list((tmp_path / "cache").rglob("*.npy"))


def _linked_class_folders(tmp_path: Path) -> tuple[Path, dict[str, bytes], np.ndarray, np.ndarray]:
    """A folder whose class folders are links into the image folder ``tmp_path/real``, one
    holding a link back up the tree; with the files, images and labels it stands for."""
    files, imgs, labs = image_folder_files(per_class=3)
    real = write_dir(tmp_path / "real", files)
    linked = tmp_path / "linked"
    linked.mkdir()
    for cls in sorted(CLASSES3):
        (linked / cls).symlink_to(real / cls, target_is_directory=True)
    (linked / sorted(CLASSES3)[0] / "loop").symlink_to(linked, target_is_directory=True)
    return linked, files, imgs, labs


def test_image_folder_of_linked_class_folders(tmp_path: Path) -> None:
    """Class folders that are symbolic links (a data set assembled from elsewhere) are read;
    a link back up the tree is not walked twice."""
    linked, _, imgs, labs = _linked_class_folders(tmp_path)
    ds = load_images(linked)
    assert ds.classes == sorted(CLASSES3)
    np.testing.assert_array_equal(ds.images, imgs)
    np.testing.assert_array_equal(ds.labels, labs)


def test_a_folder_of_linked_class_folders_is_cached_and_fingerprinted_by_what_it_holds(
    tmp_path: Path,
) -> None:
    """The decoded-array cache and a run's record of its --data folder see the files inside
    linked class folders, once each (a link back up the tree is not counted again): an image
    changed behind a link is read anew, not served stale from the cache."""
    from reprlab.io import input_files

    linked, files, imgs, _ = _linked_class_folders(tmp_path)
    assert input_files({"data": str(linked)})["data"]["bytes"] == sum(map(len, files.values()))
    np.testing.assert_array_equal(load_images(linked).images, imgs)  # now cached
    name = sorted(files)[0]
    new = files[sorted(files)[1]]  # another image
    (tmp_path / "real" / name).write_bytes(new)  # behind the link
    again = load_images(linked)
    assert not np.array_equal(again.images[0], imgs[0])
    np.testing.assert_array_equal(again.images[1:], imgs[1:])


def test_flat_folder_is_unlabelled(tmp_path: Path) -> None:
    files, imgs, _ = image_folder_files(per_class=2)
    flat = {k.replace("/", "_"): v for k, v in files.items()}
    ds = load_images(write_tar(tmp_path / "flat.tgz", flat))
    assert ds.labels is None and len(ds) == 6


def test_one_image_file_is_one_unlabelled_image(tmp_path: Path) -> None:
    img = random_images(1)[0]
    Image.fromarray(img).save(tmp_path / "cat.PNG")
    ds = load_images(tmp_path / "cat.PNG")
    assert ds.labels is None and ds.images.shape == (1, *img.shape)
    assert np.array_equal(ds.images[0], img)  # PNG is lossless
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    with raises_naming(tmp_path / "broken.jpg", "not a readable image"):
        load_images(tmp_path / "broken.jpg")


def test_every_image_format_pil_reads_losslessly_is_the_same_image(tmp_path: Path) -> None:
    """A folder of .png, .bmp, .gif, .webp (lossless) and .tif files of the same 16-colour
    pixels: five images of one class, each the same array (a GIF's palette holds 16 colours
    exactly)."""
    from PIL import Image

    from reprlab.data import load_images

    rng = np.random.default_rng(0)
    palette = rng.integers(0, 256, (16, 3), dtype=np.uint8)
    pixels = palette[rng.integers(0, 16, (8, 8))]
    folder = tmp_path / "imgs" / "cls"
    folder.mkdir(parents=True)
    for suffix in ("png", "bmp", "gif", "webp", "tif"):
        Image.fromarray(pixels).save(folder / f"x.{suffix}", lossless=True)
    ds = load_images(tmp_path / "imgs")
    assert len(ds) == 5 and ds.classes == ["cls"]
    for img in ds.images:
        assert np.array_equal(img, pixels)


def test_wide_grey_and_rotated_photos_decode_as_they_look(tmp_path: Path) -> None:
    """16-bit and float grey images were clipped by PIL's convert("RGB") (near-white and black
    images), and a phone photo's EXIF orientation was ignored (decoded sideways)."""
    from reprlab.data import load_images

    grey = (np.arange(64).reshape(8, 8) * 1000).astype(np.uint16)  # 0..63000 of 65535
    want = np.rint(grey / 257).astype(np.uint8)
    folder = tmp_path / "imgs" / "cls"
    folder.mkdir(parents=True)
    Image.fromarray(grey).save(folder / "i16.png")
    Image.fromarray(grey).save(folder / "i16.tif")
    Image.fromarray((grey / 65535).astype(np.float32)).save(folder / "f01.tif")
    ds = load_images(tmp_path / "imgs")
    for img in ds.images:
        assert np.abs(img[..., 0].astype(int) - want).max() <= 1
        assert (img[..., 0] == img[..., 2]).all()
    photo = Image.new("RGB", (12, 8), "black")  # stored landscape, white on the left ...
    photo.paste((255, 255, 255), (0, 0, 6, 8))
    exif = photo.getexif()
    exif[0x0112] = 6  # ... shown rotated 90 degrees clockwise: white on top
    (tmp_path / "p").mkdir()
    photo.save(tmp_path / "p" / "photo.jpg", exif=exif.tobytes(), quality=95)
    img = load_images(tmp_path / "p" / "photo.jpg").images[0]
    assert img.shape == (12, 8, 3) and img[:5].mean() > 240 and img[7:].mean() < 15
    eight = tmp_path / "eight" / "cls"  # 8-bit values saved in a 16-bit file stay as they are
    eight.mkdir(parents=True)
    Image.fromarray(want.astype(np.uint16)).save(eight / "u16.png")
    assert np.array_equal(load_images(tmp_path / "eight").images[0][..., 0], want)
    Image.fromarray(np.full((4, 4), 300.0, np.float32)).save(folder / "bad.tif")
    with pytest.raises(ReprlabError, match="bad.tif: pixel values 300..300 are outside"):
        load_images(tmp_path / "imgs")


def test_links_inside_an_archive_are_the_files_they_name(tmp_path: Path, monkeypatch) -> None:
    """A hard or symbolic link in a tar was dropped without a word, so the archive of a folder
    gave fewer images than the folder; a link to a file the archive lacks is one line."""
    import tarfile

    from reprlab.data import load_images

    monkeypatch.setenv("REPRLAB_CACHE", "off")
    d = tmp_path / "d" / "cls"
    d.mkdir(parents=True)
    for i in range(2):
        Image.fromarray(np.full((4, 4, 3), 50 * i, np.uint8)).save(d / f"{i}.png")
    os.link(d / "0.png", d / "hard.png")
    os.symlink("1.png", d / "soft.png")
    with tarfile.open(tmp_path / "d.tar", "w") as tf:
        tf.add(tmp_path / "d", arcname="d")
        kinds = {m.name: m.type for m in tf.getmembers()}
    assert kinds["d/cls/hard.png"] == tarfile.LNKTYPE and kinds["d/cls/soft.png"] == tarfile.SYMTYPE
    folder, archive = load_images(tmp_path / "d"), load_images(tmp_path / "d.tar")
    assert len(folder) == len(archive) == 4
    assert np.array_equal(folder.images, archive.images)
    with tarfile.open(tmp_path / "bad.tar", "w") as tf:
        link = tarfile.TarInfo("cls/gone.png")
        link.type, link.linkname = tarfile.SYMTYPE, "cls/missing.png"
        tf.addfile(link)
    with pytest.raises(ReprlabError, match="is a link to 'cls/missing.png', which the archive"):
        load_images(tmp_path / "bad.tar")
    with tarfile.open(tmp_path / "loop.tar", "w") as tf:  # RecursionError: a traceback
        for name, target in (("cls/p.png", "q.png"), ("cls/q.png", "p.png")):
            link = tarfile.TarInfo(name)
            link.type, link.linkname = tarfile.SYMTYPE, target
            tf.addfile(link)
    with pytest.raises(ReprlabError, match="is a loop of symbolic links"):
        load_images(tmp_path / "loop.tar")


def test_photos_of_a_format_pil_cannot_read_are_skipped_with_a_note(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    """A class folder of iPhone .heic photos vanished without a word (its class too); the
    skipped photos are now named on stderr, other files (notes, a README) are not."""
    from reprlab.data import load_images

    monkeypatch.setenv("REPRLAB_CACHE", "off")
    for cls in ("cat", "dog"):
        (tmp_path / "d" / cls).mkdir(parents=True)
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "d" / cls / "0.png")
    for name in ("dog/a.HEIC", "dog/b.heic", "cat/c.avif", "cat/notes.txt"):
        (tmp_path / "d" / name).write_bytes(b"x")
    capsys.readouterr()
    assert len(load_images(tmp_path / "d")) == 2
    err = capsys.readouterr().err
    assert "skipped 1 .avif, 2 .heic file(s), a photo format reprlab does not read" in err
    assert "notes" not in err and ".txt" not in err


def test_names_that_are_not_utf8_are_read_and_written(tmp_path: Path, monkeypatch) -> None:
    """A file or class folder named in another encoding (old Windows shares) crashed the data
    cache's key, and its class name crashed the plots and JSON: the files are read by their
    real names and the names shown with a backslash escape; an .npz's Latin-1 class names and
    lone surrogates too."""
    from reprlab.data import load_images

    monkeypatch.setenv("REPRLAB_CACHE", str(tmp_path / "cache"))
    root = os.fsencode(tmp_path / "d")
    for cls in (b"cat", b"d\xe9g"):
        os.makedirs(os.path.join(root, cls))
        for i in range(2):
            pix = np.full((4, 4, 3), 40 * i + (0 if cls == b"cat" else 100), np.uint8)
            Image.fromarray(pix).save(os.path.join(root, cls, b"x\xe9%d.png" % i))
    Path(os.fsdecode(os.path.join(root, b"cat", b"notes_\xe9.txt"))).write_bytes(b"not an image")
    for _ in range(2):  # decoded, then from the cache
        ds = load_images(tmp_path / "d")
        assert ds.classes == ["cat", "d\\xe9g"] and ds.names[0] == "cat/x\\xe90.png"
        assert list(ds.labels) == [0, 0, 1, 1]
        json_ok = [n.encode("utf-8") for n in ds.classes + ds.names]  # no lone surrogates
        assert len(json_ok) == 6
    np.savez(tmp_path / "l1.npz", images=np.zeros((2, 4, 4, 3), np.uint8),
             labels=np.array([0, 1]), classes=np.array([b"caf\xe9", b"tea"]))  # fmt: skip
    assert load_images(tmp_path / "l1.npz").classes == ["caf\\xe9", "tea"]
    np.savez(tmp_path / "s.npz", images=np.zeros((2, 4, 4, 3), np.uint8),
             labels=np.array([0, 1]), classes=np.array(["a\ud800", "b"]))  # fmt: skip
    assert load_images(tmp_path / "s.npz").classes == ["a\\ud800", "b"]


def test_images_of_folders_and_archives_keep_their_file_names(tmp_path: Path, monkeypatch) -> None:
    """Each image's file, relative to the folder (or the archive's member path), in the order
    of the images; kept through the data cache and a subset; arrays have none."""
    from reprlab.data import load_images

    files, _, _ = image_folder_files(per_class=3, classes=["cat", "dog"], prefix="imgs/")
    write_dir(tmp_path / "d", files)
    monkeypatch.setenv("REPRLAB_CACHE", str(tmp_path / "cache"))
    names = [f"imgs/{c}/{i:04d}.png" for c in ("cat", "dog") for i in range(3)]
    for _ in range(2):  # decoded, then from the cache
        ds = load_images(tmp_path / "d")
        assert ds.names == [n.replace("/", os.sep) for n in names]
        assert list(ds.labels) == [0, 0, 0, 1, 1, 1]
    assert ds.subset(np.array([4, 0])).names == [ds.names[4], ds.names[0]]
    assert ds.subset(np.arange(6) >= 4).names == ds.names[4:]  # a mask
    assert load_images(write_tar(tmp_path / "d.tar", files)).names == names
    assert load_images(tmp_path / "d" / "imgs" / "dog" / "0002.png").names == ["0002.png"]
    np.savez(tmp_path / "a.npz", images=np.zeros((2, 4, 4, 3), np.uint8))
    assert load_images(tmp_path / "a.npz").names is None


def test_resize_images_back_to_the_original_size() -> None:
    from reprlab.data import resize_images

    # flat colours stay exactly the same at any size; a left-to-right ramp stays a ramp
    imgs = np.zeros((3, 8, 8, 3), np.uint8)
    imgs[0], imgs[1] = (200, 10, 90), (0, 255, 40)
    imgs[2] = np.linspace(0, 255, 8).astype(np.uint8)[None, :, None]
    big = imgs.repeat(4, axis=1).repeat(4, axis=2)  # each pixel a 4x4 block
    small = resize_images(big, 8, 8)
    assert small.shape == imgs.shape and small.dtype == np.uint8
    assert np.array_equal(small[:2], imgs[:2])
    assert (np.diff(small[2, 4, :, 0].astype(int)) > 0).all()
    gray = resize_images(imgs[..., :1], 5, 7)
    assert gray.shape == (3, 5, 7, 1) and (gray[0] == 200).all()


def test_jpeg_and_grayscale_png_are_rgb(tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8), 77, np.uint8), mode="L").save(buf, format="PNG")
    jbuf = io.BytesIO()
    Image.fromarray(random_images(1)[0]).save(jbuf, format="JPEG")
    ds = load_images(
        write_dir(tmp_path / "d", {"a/x.png": buf.getvalue(), "b/y.jpeg": jbuf.getvalue()})
    )
    assert ds.images.shape == (2, 8, 8, 3)
    assert (ds.images[0] == 77).all()


# ---------------------------------------------------------------------------------------------
# The real shared data
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("real-cache")


def test_real_training_tar_and_cached_reload(
    cifar_train: Path, real_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REPRLAB_CACHE", str(real_cache))
    t0 = time.perf_counter()
    ds = load_images(cifar_train, require_labels=True)
    first = time.perf_counter() - t0
    assert ds.images.shape == (50000, 32, 32, 3) and ds.images.dtype == np.uint8
    assert ds.classes == CIFAR10_CLASSES
    assert np.bincount(ds.labels).tolist() == [5000] * 10
    t0 = time.perf_counter()
    again = load_images(cifar_train, require_labels=True)
    second = time.perf_counter() - t0
    print(f"shared train tar: first load {first:.1f} s, cached reload {second:.2f} s")
    assert second < 2.0
    np.testing.assert_array_equal(again.images[::997], ds.images[::997])
    np.testing.assert_array_equal(again.labels, ds.labels)


def test_real_test_npz(cifar_test: Path) -> None:
    ds = load_images(cifar_test)
    assert ds.images.shape == (10000, 32, 32, 3) and ds.labels is None


def test_corrupt_cache_is_rebuilt(tmp_path: Path) -> None:
    files, imgs, _ = image_folder_files(per_class=2)
    tar = write_tar(tmp_path / "s.tar", files)
    load_images(tar)
    (npy,) = (tmp_path / "cache").rglob("*.images.npy")
    npy.write_bytes(b"garbage")
    np.testing.assert_array_equal(load_images(tar).images, imgs)
    assert np.load(npy).shape == imgs.shape  # rewritten
    # a changed source (new mtime/size) is a new cache entry, never stale arrays
    files2, imgs2, _ = image_folder_files(per_class=3)
    write_tar(tar, files2)
    np.testing.assert_array_equal(load_images(tar).images, imgs2)


def test_a_cache_folder_that_cannot_be_made_is_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The cache is optional: a ``REPRLAB_CACHE`` below a file warns and loads anyway (an audit
    of v20 caught a change that made it an error)."""
    (tmp_path / "afile").write_text("not a folder\n")
    monkeypatch.setenv("REPRLAB_CACHE", str(tmp_path / "afile" / "cache"))
    files, images, _ = image_folder_files(2)
    ds = load_images(write_dir(tmp_path / "imgs", files))
    np.testing.assert_array_equal(ds.images, images)
    assert "could not write the data cache" in capsys.readouterr().err


def test_cache_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPRLAB_CACHE", "off")
    files, _, _ = image_folder_files(per_class=1)
    assert len(load_images(write_tar(tmp_path / "s.tar", files))) == 3
    assert not (tmp_path / "cache").exists()


# ---------------------------------------------------------------------------------------------
# Default data and download
# ---------------------------------------------------------------------------------------------


def test_offline_download_says_how_to_point_at_local_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    monkeypatch.setenv("REPRLAB_DATA", str(tmp_path / "empty"))
    with pytest.raises(ReprlabError) as e:
        load_images(None)
    assert "--data" in str(e.value) and "REPRLAB_DATA" in str(e.value)


def test_download_checks_md5_and_is_used_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = make_cifar_targz(tmp_path / "served.tar.gz")
    monkeypatch.setattr(data, "CIFAR10_URL", served.as_uri())
    monkeypatch.setattr(data, "CIFAR10_MD5", "0" * 32)
    dest = tmp_path / "dl"
    with pytest.raises(ReprlabError, match="MD5"):
        data.download_cifar10(dest)
    assert not dest.exists() or not any(dest.iterdir())  # nothing half-written kept

    monkeypatch.setattr(data, "CIFAR10_MD5", hashlib.md5(served.read_bytes()).hexdigest())
    monkeypatch.setenv("REPRLAB_DATA", str(dest))
    ds = load_images(None)
    assert len(ds) == 20 and (dest / "cifar-10-python.tar.gz").is_file()
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: pytest.fail("downloaded twice"))
    assert len(load_images(None, split="test")) == 3


# ---------------------------------------------------------------------------------------------
# Splits, subsets, classes
# ---------------------------------------------------------------------------------------------


def test_stratified_split() -> None:
    labels = np.repeat(np.arange(4), [100, 50, 30, 20])
    tr, va = stratified_split(labels, 0.2, seed=3)
    assert len(np.intersect1d(tr, va)) == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([tr, va])), np.arange(200))
    assert np.bincount(labels[va]).tolist() == [20, 10, 6, 4]
    tr2, va2 = stratified_split(labels, 0.2, seed=3)
    np.testing.assert_array_equal(va, va2)
    _, va3 = stratified_split(labels, 0.2, seed=4)
    assert not np.array_equal(va, va3)
    with pytest.raises(ReprlabError):
        stratified_split(labels, 1.0, seed=0)
    tr, va = stratified_split(np.array([0, 0, 0, 1]), 0.5, seed=0)  # singleton class stays in train
    assert len(va) == 2 and 3 in tr


def test_stratified_subset() -> None:
    labels = np.repeat(np.arange(3), [100, 50, 10])
    idx = stratified_subset(labels, 30, seed=0)
    assert len(idx) == 30 and len(np.unique(idx)) == 30
    assert np.bincount(labels[idx]).tolist() == [10, 10, 10]
    idx = stratified_subset(labels, 40, seed=0)  # the small class gives all it has
    assert np.bincount(labels[idx]).tolist() == [15, 15, 10]
    assert len(stratified_subset(labels, 31, seed=0)) == 31
    np.testing.assert_array_equal(idx, stratified_subset(labels, 40, seed=0))


def test_limit_images(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ds = load_images(make_npz(tmp_path / "a.npz", n=30, k=3))
    assert limit_images(ds, None, seed=0) is ds
    sub = limit_images(ds, 12, seed=0)
    assert np.bincount(sub.labels).tolist() == [4, 4, 4] and sub.source == ds.source
    np.testing.assert_array_equal(sub.images, ds.images[stratified_subset(ds.labels, 12, 0)])
    assert capsys.readouterr().err == ""
    # a limit above the set (a quick preset on a small data set) keeps every image, with a note
    assert limit_images(ds, 1500, seed=0) is ds
    err = capsys.readouterr().err
    assert "--limit 1500" in err and "30 images" in err and str(tmp_path / "a.npz") in err
    assert limit_images(ds, 30, seed=0) is ds and capsys.readouterr().err == ""
    assert limit_images(ds, 1500, seed=1) is ds  # the same note again (a pipeline's next stage)
    assert capsys.readouterr().err == ""  # is not repeated


def test_run_images_is_every_modes_limit_split_and_test_set(tmp_path: Path) -> None:
    """The one place the modes take their images from: the --limit subset, then the seeded
    stratified split of it (so fine-tuning validates on images the encoder never trained on)."""
    from types import SimpleNamespace

    ds = load_images(make_npz(tmp_path / "a.npz", n=60, k=3))
    np.savez(tmp_path / "test.npz", images=random_images(5))
    cfg = SimpleNamespace(limit=30, seed=2, val_fraction=0.2, test_data=str(tmp_path / "test.npz"))
    got = run_images(ds, cfg, batch_size=24)
    sub = limit_images(ds, 30, seed=2)
    tr, va = stratified_split(sub.labels, 0.2, seed=2)
    np.testing.assert_array_equal(got.train.images, sub.images[tr])
    np.testing.assert_array_equal(got.val.labels, sub.labels[va])
    assert len(got.train) == 24 and len(got.val) == 6 and len(got.test) == 5
    with raises_naming(tmp_path / "a.npz", "--batch_size 25"):
        run_images(ds, cfg, batch_size=25)
    cfg.test_data = str(tmp_path / "other.npz")
    np.savez(cfg.test_data, images=random_images(4, 16, 16))
    with raises_naming(tmp_path / "other.npz", "16x16x3"):
        run_images(ds, cfg)
    one = ds.subset(np.flatnonzero(ds.labels == 1))
    with raises_naming(tmp_path / "a.npz", "two classes (triplets need negatives)", "only class"):
        run_images(one, cfg, why=" (triplets need negatives)")


def test_select_classes(tmp_path: Path) -> None:
    ds = load_images(make_npz(tmp_path / "a.npz", n=30, k=10))
    sub = select_classes(ds, ["cat", 0])
    assert sub.classes == ["cat", "airplane"] and len(sub) == 6
    np.testing.assert_array_equal(sub.labels, [1, 0, 1, 0, 1, 0])
    np.testing.assert_array_equal(sub.images[0], ds.images[0])
    with raises_naming(tmp_path / "a.npz", "'zebra'"):
        select_classes(ds, ["zebra"])
    with raises_naming(tmp_path / "a.npz"):
        select_classes(ds, [10])


def test_subset_and_compatible(tmp_path: Path) -> None:
    ds = load_images(make_npz(tmp_path / "a.npz"))
    s = ds.subset(np.array([3, 1]))
    assert len(s) == 2 and s.labels.tolist() == [0, 1] and s.classes == ds.classes
    np.savez(tmp_path / "other.npz", images=random_images(4, 16, 16))
    check_compatible(ds, ds)
    with raises_naming(tmp_path / "other.npz", "16x16x3"):
        check_compatible(ds, load_images(tmp_path / "other.npz"))


# ---------------------------------------------------------------------------------------------
# Transforms
# ---------------------------------------------------------------------------------------------


def test_transforms() -> None:
    x = to_float(random_images(50, 4, 4))
    assert x.dtype == np.float32 and x.min() >= 0 and x.max() <= 1
    x[..., 1] = x[..., 1] * 0.1 + 0.7
    st = Standardizer().fit(x)
    z = st.transform(x)
    np.testing.assert_allclose(z.mean(axis=(0, 1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(z.std(axis=(0, 1, 2)), 1, atol=1e-4)
    st2 = Standardizer.from_dict(st.to_dict())
    np.testing.assert_allclose(st2.transform(x[:3]), z[:3], rtol=1e-6)
    assert st.mean_.shape == (3,) and st.std_.shape == (3,)

    rgb = np.zeros((1, 1, 2, 3), np.uint8)
    rgb[0, 0, 0] = [255, 0, 0]
    rgb[0, 0, 1] = [255, 255, 255]
    g = grayscale(rgb)
    assert g.shape == (1, 1, 2, 1) and g[0, 0, :, 0].tolist() == [76, 255]
    assert grayscale(to_float(rgb)).dtype == np.float32
    assert flatten(x).shape == (50, 48)


def test_gamma_encode() -> None:
    x = to_float(random_images(20, 4, 4))
    assert gamma_encode(x, 1.0) is x or np.array_equal(gamma_encode(x, 1.0), x)
    np.testing.assert_allclose(gamma_encode(x, 0.5), np.sqrt(x), rtol=1e-6)
    y = gamma_encode(np.array([0.0, 0.01, 0.25, 1.0], np.float32), 0.25)
    np.testing.assert_allclose(y, [0.0, 0.01**0.25, 0.25**0.25, 1.0], rtol=1e-6)
    assert y.dtype == np.float32 and np.all(np.diff(y) > 0)  # monotone, ends kept
    # several powers: one channel block per power, in order, along the last axis
    z = gamma_encode(x, (0.5, 1.0, 2.0))
    assert z.shape == (*x.shape[:3], 3 * x.shape[3]) and z.dtype == np.float32
    c = x.shape[3]
    np.testing.assert_allclose(z[..., :c], np.sqrt(x), rtol=1e-6)
    np.testing.assert_array_equal(z[..., c : 2 * c], x)
    np.testing.assert_allclose(z[..., 2 * c :], x**2, rtol=1e-6)
    np.testing.assert_array_equal(gamma_encode(x, (0.5,)), gamma_encode(x, 0.5))


def test_random_translate_moves_each_image_by_at_most_the_shift() -> None:
    h, w, c, p = 6, 5, 3, 2
    imgs = np.arange(40 * h * w * c, dtype=np.float32).reshape(40, h, w, c)
    rows = imgs.reshape(40, -1)
    assert random_translate(rows, (h, w, c), 0, np.random.default_rng(0)) is rows
    out = random_translate(rows, (h, w, c), p, np.random.default_rng(0))
    assert out.shape == rows.shape and out.dtype == rows.dtype
    np.testing.assert_array_equal(
        out, random_translate(rows, (h, w, c), p, np.random.default_rng(0))
    )  # seeded
    padded = np.pad(imgs, ((0, 0), (p, p), (p, p), (0, 0)), mode="reflect")
    seen = set()
    for i, o in enumerate(out.reshape(40, h, w, c)):
        hits = [
            (dy, dx)
            for dy in range(2 * p + 1)
            for dx in range(2 * p + 1)
            if np.array_equal(o, padded[i, dy : dy + h, dx : dx + w])
        ]
        assert len(hits) == 1  # a reflect-filled window of its own image
        seen.add(hits[0])
    assert len(seen) > 10  # the offsets vary over the batch


# ---------------------------------------------------------------------------------------------
# Bad input: one-line ReprlabError naming the file
# ---------------------------------------------------------------------------------------------


BAD_NPZ = {
    "float_images": dict(images=np.full((3, 4, 4, 3), np.nan, np.float32)),
    "wrong_rank": dict(images=np.zeros((3, 4, 4, 3, 1), np.uint8)),
    "flat_rank": dict(images=np.zeros((3, 48), np.uint8)),
    "four_channels": dict(images=np.zeros((3, 4, 4, 4), np.uint8)),
    "empty": dict(images=np.zeros((0, 4, 4, 3), np.uint8)),
    "labels_length": dict(images=np.zeros((3, 4, 4, 3), np.uint8), labels=np.arange(2)),
    "labels_float": dict(images=np.zeros((3, 4, 4, 3), np.uint8), labels=np.array([0.0, 1, 2])),
    "labels_negative": dict(images=np.zeros((3, 4, 4, 3), np.uint8), labels=np.array([0, -1, 2])),
    "labels_range": dict(
        images=np.zeros((3, 4, 4, 3), np.uint8),
        labels=np.array([0, 1, 2]),
        classes=np.array(["a", "b"]),
    ),  # fmt: skip
    "no_images": dict(pictures=np.zeros((3, 4, 4, 3), np.uint8)),
}


@pytest.mark.parametrize("case", sorted(BAD_NPZ))
def test_bad_npz(tmp_path: Path, case: str) -> None:
    path = tmp_path / f"{case}.npz"
    np.savez(path, **BAD_NPZ[case])
    with raises_naming(path):
        load_images(path)


def test_missing_truncated_nonzip_unknown(tmp_path: Path) -> None:
    with raises_naming(tmp_path / "nope.npz", "not found"):
        load_images(tmp_path / "nope.npz")
    good = make_npz(tmp_path / "good.npz").read_bytes()
    (tmp_path / "trunc.npz").write_bytes(good[: len(good) // 2])
    with raises_naming(tmp_path / "trunc.npz"):
        load_images(tmp_path / "trunc.npz")
    (tmp_path / "text.npz").write_text("hello")
    with raises_naming(tmp_path / "text.npz"):
        load_images(tmp_path / "text.npz")
    (tmp_path / "x.csv").write_text("1,2")
    with raises_naming(tmp_path / "x.csv", "unknown data format"):
        load_images(tmp_path / "x.csv")
    zipfile.ZipFile(tmp_path / "photos.zip", "w").close()
    with raises_naming(tmp_path / "photos.zip", "zip archives are not read, a tar is"):
        load_images(tmp_path / "photos.zip")
    (tmp_path / "bad.tar.gz").write_bytes(b"not a tar")
    with raises_naming(tmp_path / "bad.tar.gz"):
        load_images(tmp_path / "bad.tar.gz")


def _npy_header(shape: tuple[int, ...]) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": "|u1", "fortran_order": False, "shape": shape}
    )
    return buf.getvalue()


def test_zip_bomb_like_npz_is_refused(tmp_path: Path) -> None:
    for name, shape in (("huge", (10**6, 10**4, 32, 3)), ("inconsistent", (100, 32, 32, 3))):
        path = tmp_path / f"{name}.npz"
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("images.npy", _npy_header(shape) + b"\0" * 1000)
        with raises_naming(path, "declares shape"):
            load_images(path)


def test_object_array_npz_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "obj.npz"
    np.savez(path, images=np.array([{"a": 1}], dtype=object))
    with raises_naming(path):
        load_images(path)


class _Evil:
    def __init__(self, fn: object, arg: str):
        self.fn, self.arg = fn, arg

    def __reduce__(self):
        return (self.fn, (self.arg,))


@pytest.mark.parametrize("how", ["os.system", "builtins.exec"])
def test_pickle_that_runs_code_is_refused(tmp_path: Path, how: str) -> None:
    marker = tmp_path / "PWNED"
    if how == "os.system":
        evil = _Evil(os.system, f"touch {marker}")
    else:
        evil = _Evil(exec, f"open({str(marker)!r}, 'w').close()")
    batch = pickle.dumps({b"data": evil, b"labels": [0]}, protocol=2)
    folder = write_dir(tmp_path / "cifar-10-batches-py", {"data_batch_1": batch})
    tar = write_tar(tmp_path / "evil.tar.gz", {"cifar-10-batches-py/data_batch_1": batch})
    for src in (folder, tar):
        with raises_naming(src, "refusing to unpickle"):
            load_images(src)
    assert not marker.exists()


def test_truncated_cifar_batch(tmp_path: Path) -> None:
    batch, _ = cifar_batch(4, 0)
    folder = write_dir(tmp_path / "c", {"data_batch_1": batch[: len(batch) // 2]})
    with raises_naming(folder / "data_batch_1"):
        load_images(folder)


@pytest.mark.parametrize("member", ["../evil/x.png", "/abs/cat/x.png", "train/../../x.png"])
def test_tar_member_escaping_is_refused(tmp_path: Path, member: str) -> None:
    files, _, _ = image_folder_files(per_class=1)
    files[member] = next(iter(files.values()))
    tar = write_tar(tmp_path / "esc.tar", files)
    with raises_naming(tar, member):
        load_images(tar)


def test_undecodable_and_odd_size_images(tmp_path: Path) -> None:
    files, _, _ = image_folder_files(per_class=2)
    bad = dict(files, **{"dog/0001.png": b"\x89PNG garbage"})
    tar = write_tar(tmp_path / "bad.tar", bad)
    with raises_naming(tar, "dog/0001.png"):
        load_images(tar)
    odd_files, _, _ = image_folder_files(per_class=1, classes=["frog"], size=10)
    odd = dict(files, **{"frog/0000.png": odd_files["frog/0000.png"]})
    d = write_dir(tmp_path / "odd", odd)
    with raises_naming(d, "frog/0000.png", "10x10"):
        load_images(d)


def test_empty_folder_and_unlabelled_select(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with raises_naming(tmp_path / "empty", "no images"):
        load_images(tmp_path / "empty")
    ds = ImageSet(random_images(2), None, [], "u.npz")
    with raises_naming("u.npz"):
        select_classes(ds, [0])


def test_layout_errors(tmp_path: Path) -> None:
    files, _, _ = image_folder_files(per_class=1)
    mixed = dict(files, **{"extra/deep/x.png": next(iter(files.values()))})
    tar = write_tar(tmp_path / "mixed.tar", mixed)
    with raises_naming(tar, "different folder depths (e.g. extra/deep/x.png)"):
        load_images(tar)
    # the stray one is named, whether it is deeper or shallower than the others
    top = {f"train/{k}": v for k, v in files.items()}
    top["train/preview.png"] = next(iter(files.values()))
    stray = write_tar(tmp_path / "s.tar", top)
    with raises_naming(stray, "(e.g. train/preview.png)"):
        load_images(stray)
    only_test = write_tar(tmp_path / "t.tar", {f"test/{k}": v for k, v in files.items()})
    with raises_naming(only_test, "no 'train' split"):
        load_images(only_test)
    assert len(load_images(only_test, split="test")) == 3
    nested = write_tar(tmp_path / "n.tar", {f"mydata/train/{k}": v for k, v in files.items()})
    assert load_images(nested).classes == sorted(CLASSES3)


def test_reprlab_data_points_at_local_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: pytest.fail("no download"))
    shared = tmp_path / "shared"
    shared.mkdir()
    make_npz(shared / "cifar10_test_images.npz", labels=False)
    monkeypatch.setenv("REPRLAB_DATA", str(shared))
    assert len(load_images(None, split="test")) == 12
    monkeypatch.setenv("REPRLAB_DATA", str(shared / "cifar10_test_images.npz"))
    assert len(load_images(None)) == 12
    files, _, _ = image_folder_files(per_class=2)
    monkeypatch.setenv("REPRLAB_DATA", str(write_dir(tmp_path / "mine", files)))
    assert load_images(None).classes == sorted(CLASSES3)  # the user's folder, no download
    make_cifar_targz(tmp_path / "dl" / "cifar-10-python.tar.gz")
    assert len(load_images(tmp_path / "dl")) == 20  # a folder holding the official archive


def test_shared_cifar10_folder_as_data(cifar_train: Path, cifar_test: Path) -> None:
    """``--data`` (or ``--test_data``) may name the folder of the shared copy itself."""
    folder = cifar_train.parent
    assert cifar_test.parent == folder
    train = load_images(folder)
    np.testing.assert_array_equal(train.labels, load_images(cifar_train).labels)
    assert len(train) == 50000 and train.classes == CIFAR10_CLASSES
    test = load_images(folder, split="test")
    assert len(test) == 10000 and test.labels is None


def test_hidden_files_and_folders_are_not_data(tmp_path: Path) -> None:
    """Jupyter's ``.ipynb_checkpoints/``, macOS's ``__MACOSX/`` and ``._name`` files, in a folder
    or a tar: skipped, so they never become a class that shifts every label."""
    files, images, labels = image_folder_files(per_class=2)
    junk = next(iter(files.values()))
    extra = {
        ".ipynb_checkpoints/0000.png": junk,
        f"{CLASSES3[0]}/.ipynb_checkpoints/0000-checkpoint.png": junk,
        f"{CLASSES3[1]}/._0000.png": b"AppleDouble",
        f"__MACOSX/{CLASSES3[0]}/._0001.png": b"AppleDouble",
    }
    for src in (write_dir(tmp_path / "d", {**files, **extra}),
                write_tar(tmp_path / "t.tar", {**files, **extra})):  # fmt: skip
        ds = load_images(src)
        assert ds.classes == sorted(CLASSES3)
        assert np.array_equal(ds.images, images) and np.array_equal(ds.labels, labels)


def test_a_pipe_or_a_broken_link_in_an_image_folder_is_refused(tmp_path: Path) -> None:
    """Reading a named pipe would wait forever, and a dangling link said only "No such file"
    with exit 1 (v20; found by an audit helper): both are one line naming the entry."""
    root = tmp_path / "imgs"
    write_dir(root, image_folder_files(2, ["cat", "dog"])[0])
    os.mkfifo(root / "cat" / "pipe.png")
    with raises_naming(root / "cat" / "pipe.png", "not a regular file"):
        load_images(root)
    (root / "cat" / "pipe.png").unlink()
    (root / "dog" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    with raises_naming(root / "dog" / "gone.png", "a broken link"):
        load_images(root)


def test_an_image_file_of_absurd_size_is_refused(tmp_path: Path, monkeypatch) -> None:
    """A damaged or hostile archive (a sparse member of 100 GB) is refused by its declared
    size before anything is read."""
    files, _, _ = image_folder_files(per_class=2)
    monkeypatch.setattr(data, "MAX_IMAGE_BYTES", 100)  # every test image is larger
    tar = write_tar(tmp_path / "big.tar", files)
    with raises_naming(tar, "MiB at most; refused"):
        load_images(tar)
    folder = write_dir(tmp_path / "big", files)
    with raises_naming(folder, "MiB at most; refused"):
        load_images(folder)
    monkeypatch.setattr(data, "MAX_BATCH_BYTES", 100)  # and every CIFAR batch
    for cifar in (make_cifar_folder(tmp_path / "c"), make_cifar_targz(tmp_path / "c.tar.gz")):
        with raises_naming(cifar, "MiB at most; refused"):
            load_images(cifar)
