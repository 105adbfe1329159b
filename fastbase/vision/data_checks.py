"""Layer 6: the checks on the way to an ImageDataBunch: the factories' folders and class folders,
unreadable files (left out or named), the transforms' split into training and validation, and
`tfm_y` (targets that are images, such as masks, must move with their images, and only they)."""
from __future__ import annotations

from ..core import Path, is_listy
from ..data import DataError, LabelError, LabelList, LabelLists
from .dataset import check_files, format_list
from .transforms import Crop, GeometricTransform, LightingTransform

__all__ = ["check_class_folders", "check_tfm_y", "find_folder", "resolve_file", "split_tfms",
           "without_bad_files"]


def find_folder(path: Path, name, what: str, hint: bool = False) -> Path:
    folder = path / name
    if not folder.is_dir():
        subs = sorted(p.name for p in path.iterdir() if p.is_dir()) if path.is_dir() else []
        tip = f" Pass {'valid' if what == 'validation' else 'train'}='<folder>'" + (
            ", or valid_pct=0.2 to split the training folder at random" if hint else "") + "."
        where = f"{path} holds: {', '.join(subs) or 'no folders'}" if path.is_dir() else f"{path} does not exist"
        raise DataError(f"No {what} folder {folder} ({where}).{tip}")
    return folder


def check_class_folders(train_dir: Path, items, skip_bad: bool) -> None:
    """Class folders without images, and images outside any class folder, are mistakes worth naming."""
    loose = [fn for fn in items if fn.parent == train_dir]
    if loose:
        raise LabelError(f"{len(loose)} image(s) lie directly in {train_dir} ({format_list(loose)}), outside any "
                         "class folder: move them into a folder named after their class.")
    used = {fn.relative_to(train_dir).parts[0] for fn in items}  # class folders may hold subfolders
    empty = sorted(p.name for p in train_dir.iterdir()
                   if p.is_dir() and not p.name.startswith(".") and p.name not in used)
    if empty and not skip_bad:
        raise DataError(f"Class folder(s) {format_list(empty)} in {train_dir} hold no images: add images or "
                        "remove the folder(s) (skip_bad=True leaves them out).", options={"skip_bad": True})


def without_bad_files(lls, check_images: bool, skip_bad: bool):
    """`lls`, or (with `skip_bad`) new LabelLists without the unreadable training and validation files;
    a BadFilesError names them otherwise. Classes are chosen again from what is left."""
    lists = (lls.train, lls.valid)
    kept = [check_files(list(ll.x.items), list(range(len(ll))), what, check_images, skip_bad)[1]
            for ll, what in zip(lists, ("training", "validation"))]
    if all(len(idx) == len(ll) for idx, ll in zip(kept, lists)):
        return lls
    parts = [LabelList(ll.x[idx], ll.y.new([ll.y.items[i] for i in idx])) for ll, idx in zip(lists, kept)]
    new = LabelLists(lls.path, *parts).transform(lls.tfms, **lls.tfm_kwargs)
    new.test = lls.test
    return new


def check_tfm_y(image_targets: bool, tfm_y: bool, train_y, resizes: bool) -> None:
    """`tfm_y` is set exactly when the targets are images (`image_targets`) that the transforms resize."""
    if tfm_y and not image_targets:
        raise DataError(f"tfm_y=True moves targets that are images (masks) with their images; these labels are a "
                        f"{type(train_y).__name__}. Leave tfm_y out, or label with masks (SegmentationItemList).")
    if image_targets and resizes and not tfm_y:
        raise DataError("Segmentation masks must be resized and moved with their images: pass tfm_y=True to "
                        "transform (e.g. .transform(get_transforms(), size=128, tfm_y=True)).")


def split_tfms(ds_tfms):
    if ds_tfms is None:
        return [], []
    if not (isinstance(ds_tfms, (tuple, list)) and len(ds_tfms) == 2 and all(is_listy(t) for t in ds_tfms)):
        raise DataError("ds_tfms must be (train transforms, valid transforms), as get_transforms() returns.")
    train, valid = list(ds_tfms[0]), list(ds_tfms[1])
    moving = [t for t in valid if isinstance(t, (GeometricTransform, LightingTransform))]
    if moving:
        raise DataError(f"Validation transforms must be deterministic; {moving} are random. Move them to the "
                        "training list (validation images get the centre crop/pad/squish to `size`).")
    other = [t for t in valid if not (isinstance(t, Crop) and t.centred)]
    if other:
        raise DataError(f"Validation transforms {other} are not supported: fastbase resizes validation images "
                        "deterministically in the loader workers.")
    return train, valid


def resolve_file(path: Path, fn) -> Path:
    fn = Path(fn)
    return fn if fn.is_absolute() or fn.exists() else Path(path) / fn
