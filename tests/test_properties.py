"""Inputs generated, not hand-picked (Hypothesis): label CSVs, file names, image files of every mode,
size and truncation, tabular frames, text documents. The property: a result, or a FastbaseError that names the
culprit; never another exception. A fixed example budget and derandomized runs keep CI stable."""
import csv
import io
import math

import numpy as np
import PIL.Image
import pytest
import torch
from image_fixtures import save_image

from fastbase.core import FastbaseError
from fastbase.vision.data import ImageDataBunch
from fastbase.vision.image import check_image, open_image

hypothesis = pytest.importorskip("hypothesis", reason="property tests need pip install hypothesis")
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# a fixed, derandomized budget per test: decoding one image is cheap, building a DataBunch is not
PROFILE = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                   suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
SMALL = settings(PROFILE, max_examples=8)
FAST = {"bs": 4, "num_workers": 0, "device": "cpu", "size": 8}

# the modes each format writes (Pillow)
FORMATS = {"PNG": ("1", "L", "P", "RGB", "RGBA", "LA", "I;16"), "JPEG": ("L", "RGB", "CMYK"),
           "BMP": ("1", "L", "P", "RGB"), "GIF": ("L", "P"), "WEBP": ("RGB", "RGBA"),
           "TIFF": ("1", "L", "P", "RGB", "RGBA", "CMYK", "I", "F", "I;16")}


@st.composite
def image_files(draw):
    """(bytes of an image file, format, mode, (w, h)), perhaps cut short at a random offset."""
    fmt = draw(st.sampled_from(sorted(FORMATS)))
    mode = draw(st.sampled_from(FORMATS[fmt]))
    w, h = draw(st.integers(1, 200)), draw(st.integers(1, 200))
    seed = draw(st.integers(0, 2**16))
    pixels = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    img = PIL.Image.fromarray(pixels).convert(mode) if mode not in ("I", "I;16", "F") else \
        PIL.Image.fromarray(pixels[..., 0].astype(np.int32) * 200).convert(mode)
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    data = buf.getvalue()
    if draw(st.booleans()):
        data = data[:draw(st.integers(0, max(0, len(data) - 1)))]
    return data, fmt, mode, (w, h)


@PROFILE
@given(image_files())
def test_any_image_file_opens_or_is_refused_by_name(tmp_path_factory, case):
    data, fmt, mode, (w, h) = case
    file = tmp_path_factory.mktemp("img") / f"pic {mode.replace(';', '_')}.{fmt.lower()}"
    file.write_bytes(data)
    reason = check_image(file)
    assert reason is None or isinstance(reason, str)
    try:
        img = open_image(file)
    except FastbaseError as e:
        assert str(file) in str(e)
        return
    assert reason is None, f"{reason} yet it opened"
    assert tuple(img.data.shape) == (3, h, w) and img.data.dtype == torch.float32
    assert 0 <= float(img.data.min()) and float(img.data.max()) <= 1


LABELS = st.one_of(st.text(max_size=12), st.sampled_from(["", "nan", "NaN", "a,b", 'say "hi"', "ünï cødé", "日本",
                                                          " padded ", "\t", "cat", "cat"]))


@pytest.fixture(scope="module")
def six_images(tmp_path_factory):
    root = tmp_path_factory.mktemp("csv")
    for i in range(6):
        save_image(root / f"img {i}.png", hw=(8, 8), color=(40 * i, 0, 0))
    return root


@SMALL
@given(labels=st.lists(LABELS, min_size=6, max_size=6), header=st.booleans())
def test_any_label_csv_gives_a_databunch_or_names_the_problem(six_images, labels, header):
    file = six_images / "labels.csv"
    with open(file, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        if header:
            writer.writerow(["name", "label"])
        writer.writerows((f"img {i}.png", label) for i, label in enumerate(labels))
    try:
        data = ImageDataBunch.from_csv(six_images, csv_labels="labels.csv", header="infer" if header else None,
                                       valid_pct=0.34, seed=0, **FAST)
    except FastbaseError as e:
        assert "labels.csv" in str(e) or any(repr(label) in str(e) or label in str(e) for label in labels), str(e)
        return
    assert len(data.train_ds) + len(data.valid_ds) == 6
    assert set(map(str, data.classes)) <= {str(label) for label in labels}


NAMES = st.text(st.characters(exclude_categories=("Cs", "Cc"), exclude_characters="/\\\0"), min_size=1,
                max_size=16).filter(lambda s: s.strip(" .") != "" and len(s.encode()) < 100)


@SMALL
@given(classes=st.lists(NAMES, min_size=2, max_size=3, unique_by=str.casefold), stem=NAMES)
def test_any_file_and_folder_names_build_a_databunch(tmp_path_factory, classes, stem):
    root = tmp_path_factory.mktemp("names")
    for split, n in (("train", 2), ("valid", 1)):
        for c, name in enumerate(classes):
            for i in range(n):
                save_image(root / split / name / f"{stem} {i}.png", hw=(8, 8), color=(60 * c, 0, 0))
    try:
        data = ImageDataBunch.from_folder(root, **FAST)
    except FastbaseError as e:
        assert any(name in str(e) for name in classes) or stem in str(e), str(e)
        return
    assert sorted(data.classes) == sorted(classes) and len(data.train_ds) == 2 * len(classes)
    assert data.one_batch()[0].shape == (min(4, 2 * len(classes)), 3, 8, 8)


# --- tabular frames ---------------------------------------------------------------------------------------------
pd = pytest.importorskip("pandas")

COLUMN_KINDS = ["normal", "all missing", "infinite", "constant", "some missing"]


def column(kind: str, n: int, rng) -> np.ndarray:
    values = rng.normal(size=n)
    if kind == "all missing":
        values[:] = np.nan
    elif kind == "infinite":
        values[rng.integers(0, n)] = rng.choice([np.inf, -np.inf])
    elif kind == "constant":
        values[:] = 3.0
    elif kind == "some missing":
        values[rng.random(n) < 0.3] = np.nan
    return values


@SMALL
@given(kinds=st.lists(st.sampled_from(COLUMN_KINDS), min_size=1, max_size=3),
       unseen=st.booleans(), cat_missing=st.booleans(), seed=st.integers(0, 100))
def test_any_tabular_frame_trains_or_names_the_column(tmp_path_factory, kinds, unseen, cat_missing, seed):
    from fastbase.tabular import Categorify, FillMissing, Normalize, TabularDataBunch, tabular_learner

    rng = np.random.default_rng(seed)
    n = 24
    df = pd.DataFrame({f"x{i}_{k.replace(' ', '_')}": column(k, n, rng) for i, k in enumerate(kinds)})
    df["color"] = rng.choice(["red", "blue"], n)
    if cat_missing:
        df.loc[df.index[:3], "color"] = None
    df["y"] = rng.choice(["yes", "no"], n)
    cont = [c for c in df.columns if c.startswith("x")]
    try:
        data = TabularDataBunch.from_df(tmp_path_factory.mktemp("tab"), df, "y", valid_idx=list(range(18, 24)),
                                        procs=[FillMissing, Categorify, Normalize], cat_names=["color"],
                                        cont_names=cont, bs=8, num_workers=0, device="cpu")
        learn = tabular_learner(data, layers=[8], silent=True)
        test = df.iloc[:4].copy()
        if unseen:
            test["color"] = "ultraviolet"
        pred = learn.predict(test.iloc[0])
    except FastbaseError as e:
        assert any(c in str(e) for c in [*cont, "color"]), str(e)
        return
    probs = pred[2]
    assert probs.shape == (2,) and all(math.isfinite(float(p)) for p in probs), (kinds, probs)


def test_an_infinite_value_in_a_continuous_column_is_named_not_predicted_as_nan(tmp_path):
    """What the property above found: one inf made every prediction NaN, silently."""
    from fastbase.tabular import Normalize, TabularDataBunch, TabularError

    df = pd.DataFrame({"x": [1.0, 2.0, np.inf, 4.0] * 4, "y": ["a", "b"] * 8})
    with pytest.raises(TabularError, match=r"Column 'x' of the training table holds infinite values \(rows 2, 6"):
        TabularDataBunch.from_df(tmp_path, df, "y", valid_idx=[0, 1], procs=[Normalize], cont_names=["x"],
                                 num_workers=0, device="cpu")


# a document: unicode text (empty, spaces, markup, capitals, repeats), or bytes that are not UTF-8
DOCS = st.one_of(st.text(max_size=300), st.text(alphabet="aA <>&;#\n\t.!?", max_size=200),
                 st.binary(min_size=1, max_size=64).filter(lambda b: not _is_utf8(b)))


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@SMALL
@given(docs=st.lists(DOCS, min_size=4, max_size=4), long_doc=st.booleans())
def test_any_text_folder_gives_a_databunch_or_names_the_file(tmp_path_factory, docs, long_doc):
    from fastbase.text import TextClasDataBunch, Tokenizer

    root = tmp_path_factory.mktemp("texts")
    files = []
    for i, doc in enumerate(docs + ["a plain review"] * 4):
        split, label = ("train", "valid")[i % 2], ("pos", "neg")[i // 2 % 2]
        file = root / split / label / f"doc {i}.txt"
        file.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(doc, bytes):
            file.write_bytes(doc)
        else:
            file.write_text(doc * (200 if long_doc and i == 0 else 1), encoding="utf-8")
        files.append(file)
    try:
        data = TextClasDataBunch.from_folder(root, tokenizer=Tokenizer(n_cpus=1), min_freq=1, bs=2, device="cpu")
    except FastbaseError as e:  # the property: the error names the document that caused it
        culprits = [f for f, d in zip(files, docs) if isinstance(d, bytes) or not d.strip()]
        assert culprits and any(f.name in str(e) for f in culprits), str(e)
        return
    x, y = data.one_batch()
    assert x.dtype == torch.long and len(y) == 2 and int(x.max()) < len(data.vocab.itos)
